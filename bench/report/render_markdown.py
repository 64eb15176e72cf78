"""summary.md from the report's sections: the same sections as report.html, as plain Markdown text.

Figures have no image here: their captions are listed and point to report.html. Every cell is HTML-escaped
(Markdown viewers render inline HTML) and loses its pipes and line breaks, which would break a table row.
"""

from __future__ import annotations

import html

from bench.report.model import Block, Bullets, Figure, Note, Part, Report, Table


def _text(text) -> str:
    return html.escape(str(text), quote=False).replace("|", "/").replace("\n", " ")


def _table(table: Table) -> list[str]:
    caption = [_text(table.caption), ""] if table.caption else []
    return [
        *caption,
        "| " + " | ".join(_text(h) for h in table.headers) + " |",
        "|" + "---|" * len(table.headers),
        *("| " + " | ".join(_text(c) for c in row) + " |" for row in table.rows),
        "",
    ]


def _block(block: Block) -> list[str]:
    if isinstance(block, Note):
        return [_text(block.text), ""]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return [f"- Figure ({_text(block.alt)}, in report.html): {_text(block.caption)}", ""]
    if isinstance(block, Bullets):
        return [*(f"- {_text(item)}" for item in block.items), ""]
    if isinstance(block, Part):
        return [f"### {_text(block.title)}", "", *(line for b in block.blocks for line in _block(b))]
    raise TypeError(f"no Markdown for {type(block).__name__}")


def render_markdown(report: Report) -> str:
    """The title, the answer (line 3: tools and tests read it there), then each section."""
    lines = [f"# {_text(report.title)}", ""]
    lines += [line for paragraph in report.answer for line in (_text(paragraph), "")]
    for section in report.sections:
        lines += [f"## {_text(section.title)}", ""]
        lines += [line for block in section.blocks for line in _block(block)]
    return "\n".join(lines).rstrip("\n") + "\n"
