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

    [[tiers]]                      # ordered: new studies go to the first
    name = "tier1"
    path = "/srv/fast"
    capacity = "500 GB"
    high_watermark = 0.90          # migrate the oldest studies down above this...
    low_watermark = 0.75           # ...until usage is below this

    [destinations.WORKSTATION1]    # the AE table for C-MOVE
    host = "10.0.0.21"
    port = 104

The server imports nothing from `bench`; this module validates with the standard library.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DUPLICATE_POLICIES = ("overwrite", "reject", "keep-first")
AT_CAPACITY_POLICIES = ("reject", "recycle")
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class ConfigError(Exception):
    """A bad configuration: the message names the file, the table and the key."""


@dataclass(frozen=True)
class Tier:
    name: str
    path: Path
    capacity: int = 0  # bytes; 0 = unlimited
    high_watermark: float = 0.90
    low_watermark: float = 0.75


@dataclass(frozen=True)
class Destination:
    host: str
    port: int


@dataclass(frozen=True)
class MetricsEndpoint:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class ArchiveConfig:
    ae_title: str = "PACSBENCH"
    host: str = "127.0.0.1"
    port: int = 11112
    data: Path = Path("archive-data")
    workers: int = 0
    max_associations: int = 64
    max_pdu: int = 1 << 20  # bounds the receive buffer per association; 0 = unlimited
    fsync: bool = True
    direct_io: bool = True  # bypass the page cache when writing received files (see storage/files.py)
    duplicates: str = "overwrite"
    allowed_calling_aets: tuple[str, ...] = ()
    check_called_aet: bool = False  # off, as in DCMTK's storescp and Orthanc: any called AE title is answered
    network_timeout: float = 60.0
    # The association request timer (ARTIM, PS3.8 9.1.5): a connection that has not sent its
    # whole A-ASSOCIATE-RQ by then gets an A-ABORT and stops counting against max_associations.
    artim_timeout: float = 30.0
    shutdown_grace: float = 30.0
    migration_interval: float = 1.0
    migration_min_age: float = 2.0  # seconds a study must be quiet before it may move (or be recycled)
    # The archive's bound: bytes of stored instances on all tiers together (without [[tiers]],
    # the default tier's). Per-tier capacities still decide placement and migration; this one
    # decides whether an instance may be stored at all. 0 = unlimited.
    capacity: int = 0
    at_capacity: str = "reject"  # reject: A700 past the capacity; recycle: delete the oldest studies first
    metrics: MetricsEndpoint | None = None
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


def _tier(table: dict, where: str, base: Path) -> Tier:
    _check_keys(table, {f.name for f in fields(Tier)}, where)
    for key in ("name", "path"):
        if key not in table:
            raise ConfigError(f"{where}: required key '{key}' is missing")
    tier = Tier(
        name=_typed(table["name"], str, f"{where} name"),
        path=base / _typed(table["path"], str, f"{where} path"),
        capacity=parse_size(table.get("capacity", 0), f"{where} capacity"),
        high_watermark=_typed(table.get("high_watermark", 0.90), float, f"{where} high_watermark"),
        low_watermark=_typed(table.get("low_watermark", 0.75), float, f"{where} low_watermark"),
    )
    if not 0 < tier.low_watermark <= tier.high_watermark <= 1:
        raise ConfigError(f"{where}: need 0 < low_watermark <= high_watermark <= 1")
    return tier


def _from_table(data: dict, base: Path) -> ArchiveConfig:
    simple = {"ae_title": str, "host": str, "port": int, "data": str, "workers": int, "max_associations": int,
              "max_pdu": int, "fsync": bool, "direct_io": bool, "check_called_aet": bool, "duplicates": str,
              "network_timeout": float, "artim_timeout": float, "shutdown_grace": float,
              "migration_interval": float, "migration_min_age": float}
    _check_keys(data, set(simple) | {"allowed_calling_aets", "metrics", "tiers", "destinations", "capacity",
                                     "at_capacity"}, "top level")
    values = {key: _typed(data[key], kind, key) for key, kind in simple.items() if key in data}
    if "data" in values:
        values["data"] = base / values["data"]
    if values.get("duplicates", "overwrite") not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicates: expected one of {', '.join(DUPLICATE_POLICIES)}, got {values['duplicates']!r}")
    for key in ("artim_timeout", "network_timeout"):
        if key in values and not values[key] > 0:
            raise ConfigError(f"{key}: expected seconds above 0, got {values[key]!r}")
    if len(values.get("ae_title", "PACSBENCH")) > 16:
        raise ConfigError("ae_title: at most 16 characters")
    if "capacity" in data:
        values["capacity"] = parse_size(data["capacity"], "capacity")
    if "at_capacity" in data:
        values["at_capacity"] = _typed(data["at_capacity"], str, "at_capacity")
    if values.get("at_capacity", "reject") not in AT_CAPACITY_POLICIES:
        raise ConfigError(f"at_capacity: expected one of {', '.join(AT_CAPACITY_POLICIES)}, "
                          f"got {values['at_capacity']!r}")
    aets = data.get("allowed_calling_aets", [])
    if not isinstance(aets, list) or not all(isinstance(a, str) and a for a in aets):
        raise ConfigError("allowed_calling_aets: expected a list of AE titles")
    values["allowed_calling_aets"] = tuple(aets)
    if "metrics" in data:
        _check_keys(data["metrics"], {"host", "port"}, "[metrics]")
        values["metrics"] = MetricsEndpoint(_typed(data["metrics"].get("host", "127.0.0.1"), str, "[metrics] host"),
                                            _typed(data["metrics"].get("port", 0), int, "[metrics] port"))
    tiers = data.get("tiers", [])
    if not isinstance(tiers, list):
        raise ConfigError("tiers: use [[tiers]] tables")
    values["tiers"] = tuple(_tier(t, f"[tiers.{i}]", base) for i, t in enumerate(tiers))
    destinations = {}
    for name, table in data.get("destinations", {}).items():
        where = f"[destinations.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table with host and port")
        _check_keys(table, {"host", "port"}, where)
        if "host" not in table or "port" not in table:
            raise ConfigError(f"{where}: needs host and port")
        destinations[name] = Destination(_typed(table["host"], str, f"{where} host"), _typed(table["port"], int, f"{where} port"))
    values["destinations"] = destinations
    return ArchiveConfig(**values)


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
        return _from_table(data, path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(config: ArchiveConfig, **overrides) -> ArchiveConfig:
    """Command-line options win over the file; None means 'not given'."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
