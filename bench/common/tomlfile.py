"""Load a TOML file into a pydantic model, turning every problem into one clear line."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import AliasChoices, BaseModel, ValidationError

from bench.common.errors import UserError
from server_under_test.config import ConfigError, read_toml

Model = TypeVar("Model", bound=BaseModel)


# What a place in a model holds: ("table", Model), ("union", discriminator, {tag: Model}) for a
# union of tables told apart by a key (a scenario's [target] by its kind), ("items", Shape) for
# an array of tables or a table of tables (list[...], dict[str, ...]), or None for a value.
Shape = tuple | None


def _discriminator(metadata: typing.Iterable, default: str | None) -> str | None:
    return next((m.discriminator for m in metadata if isinstance(getattr(m, "discriminator", None), str)), default)


def _shape(annotation, discriminator: str | None = None) -> Shape:
    """What a field of this annotation holds (see Shape)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _shape(args[0], _discriminator(args[1:], discriminator))
    if origin in (list, dict):
        return ("items", _shape(args[-1]))
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # an optional table: Model | None
            return _shape(members[0], discriminator)
        if discriminator and all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return ("union", discriminator, {m.model_fields[discriminator].default: m for m in members})
        return None
    return ("table", annotation) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


@dataclass
class Place:
    """Where an error is, as a person reads the file: pydantic's location without the union tags."""

    parts: list = field(default_factory=list)
    shape: Shape = None
    union: tuple | None = None  # ("union", discriminator, {tag: Model}) the table at `parts` was chosen from


def _place(model: type[BaseModel], loc: tuple) -> Place:
    place = Place(shape=("table", model))
    for part in loc:
        shape = place.shape
        if shape and shape[0] == "union" and part in shape[2]:
            place.union, place.shape = shape, ("table", shape[2][part])  # the tag: pydantic's, not the file's
            continue
        place.parts.append(part)
        place.union = None
        if shape and shape[0] == "items":
            place.shape = shape[1]
        elif shape and shape[0] == "table" and (found := shape[1].model_fields.get(str(part))):
            place.shape = _shape(
                found.annotation, found.discriminator if isinstance(found.discriminator, str) else None
            )
        else:
            place.shape = None
    return place


def _location(parts: list) -> str:
    """['load', 'users'] -> '[load] users'; ['name'] -> 'name'."""
    parts = [str(p) for p in parts]
    if not parts:
        return "(top level)"
    if len(parts) == 1:
        return parts[0]
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


def _table(parts: list) -> str:
    return f"[{'.'.join(map(str, parts))}]"


def _keys(model: type[BaseModel]) -> list[str]:
    """A table's keys as a file may write them: field names and their alias choices (cpus, vcpus)."""
    keys = []
    for name, found in model.model_fields.items():
        aliases = found.validation_alias.choices if isinstance(found.validation_alias, AliasChoices) else []
        keys += [name, *(a for a in aliases if isinstance(a, str) and a != name)]
    return keys


def _unknown_key(model: type[BaseModel], loc: tuple) -> str:
    """An unknown key, with the close known one, or (in a union's table) the other kinds that take it."""
    table, key = _place(model, loc[:-1]), str(loc[-1])
    where = _location([*table.parts, key])
    known = _keys(table.shape[1]) if table.shape and table.shape[0] == "table" else []
    if table.union:
        _, discriminator, members = table.union
        tag = next(tag for tag, member in members.items() if member is table.shape[1])
        takers = [other for other, member in members.items() if key in _keys(member)]
        if takers:
            return f"{where}: unknown key for {discriminator} '{tag}' (only for {', '.join(takers)})"
    guess = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{guess[0]}'?)" if guess else ""
    return f"{where}: unknown key{hint}"


def _unknown_tag(place: Place, tag: object) -> str:
    """A union's key naming no member: '[target] kind: unknown kind 'nativ' (did you mean ...)'."""
    _, discriminator, members = place.shape
    guess = difflib.get_close_matches(str(tag), list(members), n=1)
    hint = f"did you mean '{guess[0]}'? " if guess else ""
    where = _location([*place.parts, discriminator])
    return f"{where}: unknown {discriminator} {tag!r} ({hint}known: {', '.join(members)})"


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """The first validation problem, phrased for a person editing the file."""
    # A typo shows up twice (an unknown key and a missing one): name the typo first.
    first = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = tuple(first["loc"])
    place = _place(model, loc)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return _unknown_key(model, loc)
    if first["type"] == "union_tag_invalid":
        return _unknown_tag(place, first["ctx"]["tag"])
    if first["type"] == "union_tag_not_found":
        return f"{_location([*place.parts, place.shape[1]])}: required key is missing"
    if first["type"] == "value_error" and not place.parts:
        return message
    if first["type"] == "value_error" and place.shape:
        return f"{_table(place.parts)}: {message}"
    if first["type"] == "missing":
        if place.shape:
            return f"required table {_table(place.parts)} is missing"
        return f"{_location(place.parts)}: required key is missing"
    return f"{_location(place.parts)}: {message} (got {first.get('input')!r})"


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
