"""What every record file of a run folder shares: strict models, a schema version, one way to write and read.

A record is a pydantic model: the writer builds it, the reader parses it, so a field is named
once and a misspelt one fails where it is written (extra fields are forbidden, assignments
validated). Each file carries `schema_version`; a file without one was written by the release
before records had a schema (version 0), whose shape version 1 reads unchanged. A file of any
other version, or one that does not fit its model, is refused in one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.common.errors import UserError

SCHEMA_VERSION = 1
PREVIOUS_RELEASE = 0  # no schema_version in the file: written before records had a schema
READABLE_VERSIONS = (PREVIOUS_RELEASE, SCHEMA_VERSION)


class Part(BaseModel):
    """A nested part of a record: named fields only, checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Record(Part):
    """A whole record file."""

    schema_version: int = Field(
        default=SCHEMA_VERSION,
        description="The version of this file's shape; absent in files of the previous release (0).",
    )


R = TypeVar("R", bound=Record)


def record_json(record: Record, indent: int | None = 2) -> str:
    """`record` as the JSON text of its file: fields never set stay out (a part a run did not reach is
    absent, not null); the schema version is always written."""
    data = {"schema_version": SCHEMA_VERSION, **record.model_dump(mode="json", exclude_unset=True)}
    return json.dumps(data, indent=indent, separators=None if indent else (",", ":"))


def write_record(path: Path, record: Record, indent: int | None = 2) -> Path:
    """`record` as JSON in `path` (record_json), replaced in one rename: a reader never sees half a file."""
    temp = path.with_name(path.name + ".tmp")
    try:
        temp.write_text(record_json(record, indent))
        temp.replace(path)
    except OSError:
        temp.unlink(missing_ok=True)  # a full disk keeps the previous file whole, and no half-written one beside it
        raise
    return path


def version_of(data: dict[str, Any]) -> object:
    """The file's schema_version as written (anything: it is checked, not trusted)."""
    return data.get("schema_version", PREVIOUS_RELEASE)


def parse_record(model: type[R], data: object, path: Path, what: str) -> R:
    """`data` (a file's JSON) as `model`; a one-line UserError naming `path`, `what` it should be and its version
    when it does not fit."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: not {what} (a JSON object)")
    version = version_of(data)
    if version not in READABLE_VERSIONS:
        raise UserError(
            f"{path}: schema_version {version!r} is not one this pacsbench reads "
            f"({', '.join(map(str, READABLE_VERSIONS))}; 0: no schema_version)"
        )
    try:
        return model.model_validate({**data, "schema_version": SCHEMA_VERSION})
    except ValidationError as exc:
        raise UserError(f"{path}: not {what} of schema_version {version}: {first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """The first problem of a validation error, in one line: where, and what."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "(the file)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def read_record(model: type[R], path: Path, what: str, missing: str = "") -> R:
    """The record in `path`, or a one-line UserError (`missing` when the file is absent).

    `what` names the record in messages: "a run record", "a pacsbench baseline" ..."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(missing or f"{path.parent}: no {path.name} ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what}: {exc}") from None
    return parse_record(model, data, path, what)
