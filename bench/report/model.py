"""The report's sections, built once and rendered three ways (report.html, summary.md; summary.json beside them).

A report is a title, an answer (the paragraphs a reader needs first) and a list of sections; a section is a
title and blocks: notes, tables, figures, bullet lists, and per-run parts that the HTML folds away. The
renderers (render_html, render_markdown) only lay these out: what a report says is decided here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Note:
    """A paragraph of prose."""

    text: str


@dataclass(frozen=True)
class Table:
    """Rows of cells under headers; `caption` comes before it, `wide` lets it scroll sideways in HTML."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    wide: bool = False


@dataclass(frozen=True)
class Figure:
    """A PNG, inlined in report.html; summary.md lists its caption (it has no images)."""

    png: bytes
    alt: str
    caption: str


@dataclass(frozen=True)
class Bullets:
    """A list of short statements (the method)."""

    items: list[str]


@dataclass(frozen=True)
class Part:
    """A titled group of blocks inside a section (one run of a comparison); HTML folds it unless `open`."""

    title: str
    blocks: list[Block]
    open: bool = False


Block = Note | Table | Figure | Bullets | Part


@dataclass(frozen=True)
class Section:
    """A titled section of the report (an <h2> in HTML, a ## heading in Markdown)."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """A whole report: its title, the answer paragraphs at the top, then its sections in order."""

    title: str
    answer: list[str]
    sections: list[Section]

    def section_titles(self) -> list[str]:
        return [s.title for s in self.sections]
