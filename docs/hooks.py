"""mkdocs hook: the reference pages generated from the code at build time, so they cannot drift.

A page asks for a generated block with a marker line `<!-- generated: NAME -->`:

- `cli`: every `pacsbench` verb from `bench.cli.main`'s argparse parser (usage, description, options),
  nested actions (`baseline save`, `vm build`, ...) included; the verbs whose options the reference archive
  parses itself (`serve`, `archive`) are read from the archive's own parser.
- `records`: every run-folder file of `bench.results.records.RECORD_MODELS` from its model's JSON Schema
  (fields, types, descriptions; nested models as sub-tables), each schema also published as a file.
- `scenario`: every key of a scenario file, from the pydantic model that validates it.
- `row-files`: adds nothing, but checks the page's tables of the row files without a model (sent.csv, ...,
  server_metrics.csv) against the columns the code writes.

An unknown marker, or a table that misses a column the code writes or names one it no longer writes, fails the build
(`mkdocs build --strict` in `make lint`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterator

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
SCHEMA_FOLDER = "reference/schemas"
# The scenario's model moves to a stage of its own (issue 20); the old place until that lands.
USAGE_WIDTH = "100"  # argparse wraps usage lines at $COLUMNS: fixed, so the page does not depend on the terminal


# -- mkdocs events ---------------------------------------------------------------------
def on_config(config):
    """The project's own code first on the path, so the references describe this checkout, installed or not."""
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_files(files, config):
    """Publish each record's JSON Schema beside the pages, for tools that read run folders."""
    for name, model in record_models().items():
        schema = json.dumps(model.model_json_schema(), indent=2) + "\n"
        files.append(File.generated(config, f"{SCHEMA_FOLDER}/{schema_file(name)}", content=schema))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def generated(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: unknown generated block '{name}' (known: {', '.join(GENERATORS)})")
        return GENERATORS[name](markdown)

    return MARKER.sub(generated, markdown)


# -- the CLI reference -----------------------------------------------------------------
def cli_reference(_page: str) -> str:
    main = importlib.import_module("bench.cli.main")  # the module: bench.cli exports its main() under that name
    with fixed_width():
        root = main.build_parser()
        own = getattr(main, "OWN_PARSERS", {})
        blocks = []
        for name, parser, summary in subcommands(root):
            if name in own:  # the verb is a stub that passes its arguments on: read the real parser
                parser = archive_parser(own[name])
            blocks.append(parser_section(parser, summary, level=2))
    return "\n".join(blocks)


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """A parser's actions (verbs): name, parser and the one-line help its parent lists it with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: expanded_help(parser, choice) for choice in action._choices_actions}
            return [(name, child, summaries.get(name, "")) for name, child in action.choices.items()]
    return []


class _Parsed(BaseException):
    """Raised instead of parsing, to carry the parser out of a command that builds its own."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def archive_parser(command: Callable) -> argparse.ArgumentParser:
    """The parser a delegated command builds and parses at once: caught as it starts parsing."""

    def catch(self, *args, **kwargs):
        raise _Parsed(self)

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = catch
    try:
        command(argparse.Namespace(args=["--help"]))
    except _Parsed as parsed:
        return parsed.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise PluginError(f"{command.__module__}.{command.__name__} did not build a parser")


@contextlib.contextmanager
def fixed_width() -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_WIDTH
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def parser_section(parser: argparse.ArgumentParser, summary: str, level: int) -> str:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if summary:
        lines += [f"*{text(summary)}*", ""]
    lines += ["```text", usage(parser), "```", ""]
    if parser.description:
        lines += [prose(parser, parser.description), ""]
    rows = [option_row(parser, action) for action in parser._actions if shown(action)]
    if rows:
        lines += ["| option | meaning |", "|---|---|", *rows, ""]
    if parser.epilog:
        lines += [prose(parser, parser.epilog), ""]
    for _, child, child_summary in subcommands(parser):
        lines.append(parser_section(child, child_summary, level + 1))
    return "\n".join(lines)


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage lines without "usage: ", continuation lines moved left by as much."""
    prefix = "usage: "
    lines = parser.format_usage().rstrip().splitlines()
    return "\n".join(line.removeprefix(prefix if n == 0 else " " * len(prefix)) for n, line in enumerate(lines))


def prose(parser: argparse.ArgumentParser, value: str) -> str:
    """A description or epilog: a paragraph, or as written when the parser keeps its line breaks (examples)."""
    if "%(prog)" in value:  # as argparse fills it in, and only then
        value = value % {"prog": parser.prog}
    raw = textwrap.dedent(value).strip()
    if issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter) and "\n" in raw:
        return f"```text\n{raw}\n```"
    return text(value)


def shown(action: argparse.Action) -> bool:
    """Options worth a row: not hidden, not the nested actions (their own sections), not -h (every verb has it)."""
    hidden = (argparse._SubParsersAction, argparse._HelpAction)
    return action.help != argparse.SUPPRESS and not isinstance(action, hidden)


def option_row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if action.option_strings:
        metavar = "" if action.nargs == 0 else " " + (action.metavar or action.dest.upper())
        name = ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)
    else:
        name = f"`{action.metavar or action.dest}`"  # a pipe inside a code span stays in its cell
    meaning = expanded_help(parser, action)
    if action.choices and not isinstance(action.choices, dict):
        meaning += f" (one of: {', '.join(f'`{c}`' for c in action.choices)})"
    if action.required and action.option_strings:
        meaning += " (required)"
    return f"| {name} | {cell(meaning)} |"


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The option's help with argparse's %(default)s-style fields filled in, as --help shows it."""
    if not action.help:
        return ""
    fields = {**vars(action), "prog": parser.prog}
    if isinstance(fields.get("choices"), (list, tuple)):
        fields["choices"] = ", ".join(map(str, fields["choices"]))
    return action.help % fields


# -- the run-folder reference ----------------------------------------------------------
def record_models() -> dict:
    try:
        from bench.results.records import RECORD_MODELS
    except ImportError as exc:
        raise PluginError(
            f"the run-folder reference is generated from bench.results.records.RECORD_MODELS: {exc}"
        ) from None
    return RECORD_MODELS


def schema_file(record_name: str) -> str:
    return f"{record_name.removesuffix('.json')}.schema.json"


def records_reference(_page: str) -> str:
    sections = []
    for name, model in record_models().items():
        link = f"JSON Schema: [{schema_file(name)}](schemas/{schema_file(name)})."
        sections.append(model_section(name, model.model_json_schema(), link))
    return "\n".join(sections)


def scenario_reference(_page: str) -> str:
    """Every key of a scenario file, from the model that validates it."""
    from bench.scenario.file import Scenario

    return model_section("scenario file", Scenario.model_json_schema(), "", level=2)


def model_section(title: str, schema: dict, link: str, level: int = 3) -> str:
    """A model's fields as a table, then each model it refers to as a sub-table."""
    definitions = schema.get("$defs", {})
    anchor = slug(title)
    lines = [f"{'#' * level} {title} {{#{anchor}}}", ""]
    if schema.get("description"):
        lines += [text(schema["description"]), ""]
    if link:
        lines += [link, ""]
    lines += field_table(schema, anchor)
    for name in reachable_definitions(schema, definitions):
        definition = definitions[name]
        lines += [f"{'#' * (level + 1)} {title}: {name} {{#{anchor}-{slug(name)}}}", ""]
        if definition.get("description"):
            lines += [text(definition["description"]), ""]
        lines += field_table(definition, anchor)
    return "\n".join(lines)


def field_table(schema: dict, anchor: str) -> list[str]:
    properties = schema.get("properties", {})
    if not properties:  # an enum or a bare type: its type says all
        return [f"Type: {type_of(schema, anchor)}.", ""]
    required = set(schema.get("required", ()))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, prop in properties.items():
        description = prop.get("description", "")
        if "default" in prop and name not in required and not nested_default(prop["default"]):
            description = f"{description} (default `{json.dumps(prop['default'])}`)".strip()
        rows.append(
            f"| `{name}` | {type_of(prop, anchor)} | {'yes' if name in required else 'no'} | {cell(description)} |"
        )
    return [*rows, ""]


def nested_default(value) -> bool:
    """A default not worth a word: null (the type says "or null"), or a filled-in model or list (its own table
    gives each part's default)."""
    return value is None or (isinstance(value, (dict, list)) and bool(value))


def type_of(prop: dict, anchor: str) -> str:
    """A JSON Schema type in a few words; a nested model is a link to its sub-table."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{anchor}-{slug(name)})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in prop["enum"])
    for union in ("anyOf", "oneOf"):
        if union in prop:
            kinds = " or ".join(type_of(option, anchor) for option in prop[union])
            key = prop.get("discriminator", {}).get("propertyName")
            return f"{kinds} (by `{key}`)" if key else kinds
    kind = prop.get("type")
    if kind == "array":
        return f"list of {type_of(prop.get('items', {}), anchor)}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"object of {type_of(values, anchor)}" if isinstance(values, dict) and values else "object"
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind:
        return f"{kind} ({prop['format']})" if "format" in prop else kind
    return "any"


def reachable_definitions(schema: dict, definitions: dict) -> list[str]:
    """The models a schema refers to, directly or through others, in the order first met."""
    found: list[str] = []

    def visit(node) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.rsplit("/", 1)[-1]
                if name not in found:
                    found.append(name)
                    visit(definitions.get(name, {}))
            for key, value in node.items():
                if key != "$defs":
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return found


# -- row files (CSV) -------------------------------------------------------------------
def row_files_check(page: str) -> str:
    """The page's hand-written tables of the row files that have no model, checked against the columns the code
    writes; nothing is added to the page."""
    from bench.results import samples, server_metrics

    files = {name: columns for name, columns in samples.RECORD_FILES.items() if name not in record_models()}
    files[server_metrics.SERVER_METRICS_FILE] = server_metrics.COLUMNS
    for name, columns in files.items():
        check_described_columns(page, name, columns)
    return ""


def check_described_columns(page: str, file_name: str, columns) -> None:
    """The table under the heading naming `file_name` must list exactly the columns the code writes."""
    heading = re.search(rf"^#+ .*{re.escape(file_name)}.*$", page, re.MULTILINE)
    if heading is None:
        raise PluginError(f"no heading names {file_name}: its columns are described under one")
    section = page[heading.end() :].split("\n#", 1)[0]
    described = re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.MULTILINE)
    missing, unknown = set(columns) - set(described), set(described) - set(columns)
    if missing or unknown:
        raise PluginError(
            f"the {file_name} table disagrees with the code: undescribed {sorted(missing)}, "
            f"no longer written {sorted(unknown)}"
        )


# -- text helpers ----------------------------------------------------------------------
def text(value: str) -> str:
    """Prose from a docstring or a help string, as one paragraph."""
    return " ".join(value.split())


def cell(value: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text(value).replace("|", "\\|")


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


GENERATORS: dict[str, Callable[[str], str]] = {
    "cli": cli_reference,
    "records": records_reference,
    "scenario": scenario_reference,
    "row-files": row_files_check,
}
