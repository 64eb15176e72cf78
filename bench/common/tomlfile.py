"""Load a TOML file into a pydantic model, turning every problem into one clear line."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from bench.common.errors import UserError
from server_under_test.config import ConfigError, read_toml

Model = TypeVar("Model", bound=BaseModel)


def _location(loc: tuple) -> str:
    """('load', 'users') -> '[load] users'; ('name',) -> 'name'."""
    parts = [str(p) for p in loc]
    if not parts:
        return "(top level)"
    if len(parts) == 1:
        return parts[0]
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


def _table_model(annotation) -> type[BaseModel] | None:
    """The model of a table field, or of the items of an array of tables (list[Model])."""
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation) or (None,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # an optional table: Model | None
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _model_at(model: type[BaseModel], parts: tuple) -> type[BaseModel] | None:
    """The model of the table at `parts` (array indices skipped), or None if it is not a table."""
    current: type[BaseModel] | None = model
    for part in parts:
        if isinstance(part, int) and current is not None:
            continue
        field = current.model_fields.get(str(part)) if current else None
        current = _table_model(field.annotation) if field else None
    return current


def _known_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at the table that holds `loc`."""
    current = _model_at(model, loc[:-1])
    return list(current.model_fields) if current else []


def _is_table(model: type[BaseModel], loc: tuple) -> bool:
    return _model_at(model, loc) is not None


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """The first validation problem, phrased for a person editing the file."""
    # A typo shows up twice (an unknown key and a missing one): name the typo first.
    first = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = tuple(first["loc"])
    where = _location(loc)
    if first["type"] == "extra_forbidden":
        guess = difflib.get_close_matches(str(loc[-1]), _known_fields(model, loc), n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        return f"{where}: unknown key{hint}"
    if first["type"] == "value_error" and not loc:
        return first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and _is_table(model, loc):
        return f"[{'.'.join(map(str, loc))}]: {first['msg'].removeprefix('Value error, ')}"
    if first["type"] == "missing":
        if _is_table(model, loc):
            return f"required table [{'.'.join(map(str, loc))}] is missing"
        return f"{where}: required key is missing"
    return f"{where}: {first['msg']} (got {first.get('input')!r})"


def load_model(path: Path, model: type[Model], what: str) -> Model:
    """Parse `path` as TOML and validate it as `model`; raise UserError on any problem."""
    try:
        data = read_toml(path, what)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path}: {explain(exc, model)}") from None
