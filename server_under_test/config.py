"""Archive configuration: one TOML file, strict (a typo is an error), sensible defaults.

    ae_title = "PACSBENCH"
    host = "127.0.0.1"
    port = 11112
    data = "archive-data"          # the index lives here (and the default tier)
    workers = 0                    # processes sharing the listening socket; 0 = one per CPU
    max_associations = 64          # across all workers
    max_pdu = 1048576              # largest PDU we receive; 0 = unlimited
    fsync = true                   # fsync files, folders and the index before answering
    direct_io = true               # write received files with O_DIRECT where the file system allows
    duplicates = "overwrite"       # overwrite | reject | keep-first (same SOP Instance UID again)
    allowed_calling_aets = []      # empty: anyone may associate
    check_called_aet = false       # true: reject an association addressed to another AE title
    network_timeout = 60           # seconds a peer may stay silent mid-operation
    artim_timeout = 30             # seconds a new connection has to complete its A-ASSOCIATE-RQ
    shutdown_grace = 30            # seconds in-flight work may take after SIGTERM
    capacity = 0                   # bytes stored on all tiers together, e.g. "4 GB"; 0 = unlimited
    at_capacity = "reject"         # reject (A700) | recycle (delete the oldest studies to make room)

    [metrics]                      # HTTP /metrics (Prometheus text) and /status (JSON)
    host = "127.0.0.1"
    port = 8080                    # omit the table to disable; 0 picks a free port

    [dicomweb]                     # DICOMweb (STOW-RS, QIDO-RS, WADO-RS) at http://host:port/dicom-web
    port = 8042                    # omit the table or 0 to disable (the address is the DICOM host's)
    max_request = "1 GiB"          # largest request body (413 beyond)
    max_requests = 64              # requests in progress, all workers (503 beyond)
    timeout = 30                   # seconds a client may stay silent (headers, body, idle keep-alive)

    [[tiers]]                      # ordered: new studies go to the first
    name = "tier1"
    path = "/srv/fast"
    capacity = "500 GB"
    high_watermark = 0.90          # migrate the oldest studies down above this...
    low_watermark = 0.75           # ...until usage is below this

    [destinations.WORKSTATION1]    # the AE table for C-MOVE
    host = "10.0.0.21"
    port = 104

The server imports nothing from `bench` and is installed alone in VM guests, whose image carries
only pydicom, pynetdicom, prometheus-client and aiohttp (bench/targets/vm/image.py): so the dataclasses
below are the one definition of every key, its type and its default, and `_build` validates a
table against them with the standard library. A key's extra rule (a size, a choice, a bound)
sits in its field's metadata.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Union, get_args, get_origin, get_type_hints

DUPLICATE_POLICIES = ("overwrite", "reject", "keep-first")
AT_CAPACITY_POLICIES = ("reject", "recycle")
SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


class ConfigError(Exception):
    """A bad configuration: the message names the file, the table and the key."""


# Extra rules of a key, in its field's metadata (checked by _checked).
SIZE = {"size": True}  # bytes, or e.g. "500 MB"
ABOVE_ZERO = {"above_zero": True}  # seconds that must not be 0


@dataclass(frozen=True)
class Tier:
    name: str
    path: Path
    capacity: int = field(default=0, metadata=SIZE)  # bytes; 0 = unlimited
    high_watermark: float = 0.90
    low_watermark: float = 0.75

    def __post_init__(self):
        if not 0 < self.low_watermark <= self.high_watermark <= 1:
            raise ConfigError("need 0 < low_watermark <= high_watermark <= 1")


@dataclass(frozen=True)
class Destination:
    host: str
    port: int


@dataclass(frozen=True)
class MetricsEndpoint:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class DicomwebEndpoint:
    port: int = 0  # 0 = off
    max_request: int = field(default=1 << 30, metadata=SIZE)
    max_requests: int = 64
    timeout: float = field(default=30.0, metadata=ABOVE_ZERO)


@dataclass(frozen=True)
class ArchiveConfig:
    ae_title: str = field(default="PACSBENCH", metadata={"max_length": 16})
    host: str = "127.0.0.1"
    port: int = 11112
    data: Path = Path("archive-data")
    workers: int = 0
    max_associations: int = 64
    max_pdu: int = 1 << 20  # bounds the receive buffer per association; 0 = unlimited
    fsync: bool = True
    direct_io: bool = True  # bypass the page cache when writing received files (see storage/files.py)
    duplicates: str = field(default="overwrite", metadata={"choices": DUPLICATE_POLICIES})
    allowed_calling_aets: tuple[str, ...] = ()
    check_called_aet: bool = False  # off, as in DCMTK's storescp and Orthanc: any called AE title is answered
    network_timeout: float = field(default=60.0, metadata=ABOVE_ZERO)
    # The association request timer (ARTIM, PS3.8 9.1.5): a connection that has not sent its
    # whole A-ASSOCIATE-RQ by then gets an A-ABORT and stops counting against max_associations.
    artim_timeout: float = field(default=30.0, metadata=ABOVE_ZERO)
    shutdown_grace: float = 30.0
    migration_interval: float = 1.0
    migration_min_age: float = 2.0  # seconds a study must be quiet before it may move (or be recycled)
    # The archive's bound: bytes of stored instances on all tiers together (without [[tiers]],
    # the default tier's). Per-tier capacities still decide placement and migration; this one
    # decides whether an instance may be stored at all. 0 = unlimited.
    capacity: int = field(default=0, metadata=SIZE)
    # reject: A700 past the capacity; recycle: delete the oldest studies first
    at_capacity: str = field(default="reject", metadata={"choices": AT_CAPACITY_POLICIES})
    metrics: MetricsEndpoint | None = None
    dicomweb: DicomwebEndpoint | None = None
    tiers: tuple[Tier, ...] = ()
    destinations: dict[str, Destination] = field(default_factory=dict)

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def storage_tiers(self) -> tuple[Tier, ...]:
        """The configured tiers, or one unlimited tier under the data folder."""
        return self.tiers or (Tier("tier1", self.data / "storage"),)


def parse_size(value, where: str) -> int:
    if isinstance(value, int) and value >= 0:
        return value
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in SIZE_UNITS:
        raise ConfigError(f"{where}: not a size: {value!r} (use bytes or e.g. '500 MB', '2 GiB')")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(sorted(allowed))})")


def _typed(value, kind, where: str):
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: expected a whole number >= 0, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}: expected a number >= 0, got {value!r}")
        return float(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _build(cls, table, where: str, base: Path):
    """An instance of the dataclass `cls` from a TOML table: its fields are the keys, their types
    and defaults; `where` names the table in messages ("" at the top level)."""
    table_name = where or "top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{table_name}: expected a table")
    known = {spec.name: spec for spec in fields(cls)}
    _check_keys(table, set(known), table_name)
    hints = get_type_hints(cls)
    values = {}
    for name, spec in known.items():
        key = f"{where} {name}" if where else name
        if name in table:
            values[name] = _value(table[name], hints[name], spec.metadata, key, base)
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise ConfigError(f"{table_name}: required key '{name}' is missing")
    try:
        return cls(**values)
    except ConfigError as exc:  # a rule across keys (__post_init__)
        raise ConfigError(f"{table_name}: {exc}") from None


def _value(value, kind, rules, key: str, base: Path):
    """One key's value, checked against its field's type and its extra rules."""
    origin, arguments = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType):  # an optional table: X | None
        (table_class,) = [a for a in arguments if a is not type(None)]
        return _build(table_class, value, f"[{key}]", base)
    if origin is tuple and arguments[0] is str:  # allowed_calling_aets
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{key}: expected a list of AE titles")
        return tuple(value)
    if origin is tuple:  # [[tiers]]: an array of tables
        if not isinstance(value, list):
            raise ConfigError(f"{key}: use [[{key}]] tables")
        return tuple(_build(arguments[0], t, f"[{key}.{i}]", base) for i, t in enumerate(value))
    if origin is dict:  # [destinations.NAME]: a table of tables
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: use [{key}.NAME] tables")
        return {name: _build(arguments[1], t, f"[{key}.{name}]", base) for name, t in value.items()}
    if rules.get("size"):
        return parse_size(value, key)
    if kind is Path:
        return base / _typed(value, str, key)
    return _checked(_typed(value, kind, key), rules, key)


def _checked(value, rules, key: str):
    """A scalar's extra rules (SIZE, ABOVE_ZERO, choices, max_length), from its field's metadata."""
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{key}: expected one of {', '.join(rules['choices'])}, got {value!r}")
    if rules.get("above_zero") and not value > 0:
        raise ConfigError(f"{key}: expected seconds above 0, got {value!r}")
    if "max_length" in rules and len(value) > rules["max_length"]:
        raise ConfigError(f"{key}: at most {rules['max_length']} characters")
    return value


def read_toml(path: Path, what: str = "config") -> dict:
    """A TOML file as a dict; ConfigError with one clear line when it is missing, unreadable or not TOML.

    The harness reads its scenarios, profiles and claims through this too (bench.common.tomlfile).
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc}") from None


def load_config(path: Path | None) -> ArchiveConfig:
    """Defaults, or the file's settings on top of them. Relative paths are relative to the file."""
    if path is None:
        return ArchiveConfig()
    data = read_toml(path)
    try:
        return _build(ArchiveConfig, data, "", path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(config: ArchiveConfig, **overrides) -> ArchiveConfig:
    """Command-line options win over the file; None means 'not given'."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
