"""The aggregate stage: sample rows (pandas) -> throughput, latency and error figures of one run.

Every figure comes from the sample rows only. The measurement window runs from the end of
the warm-up (a stated rule, default: the first 10% of the run) to the last response
received before the stop signal (run.json's start plus the load's duration, when known):
requests answered after it are the drain, reported but not measured. A request counts in the
window its response arrived in. Throughput counts acknowledged requests (warnings included:
the instance was stored, and the warnings are counted beside); latency percentiles are over
every request, failures and timeouts at their elapsed time, with the failed count beside. "Images per second" in
PACS talk means instances per second; frames/s and MB/s (10^6 bytes) stand next to it
because one multi-frame instance can hold one frame or hundreds.

Metrics have names (`ingest_instances_per_s`, `c_store_p95_ms`, ...) shared by the
comparison, the gate and the claims, and each can be cut into per-window values: the
units the bootstrap resamples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, SupportsInt, TypedDict, cast

import numpy as np
import pandas as pd

from bench.analysis.confidence import PooledQuantile, Repetition, WindowMeans
from bench.common.errors import UserError
from bench.results.samples import (
    COLUMNS,
    HTTP_OPERATIONS,
    QIDO_RS,
    SAMPLES_FILE,
    STOW_RS,
    WADO_RS,
    WADO_RS_FRAMES,
    WADO_RS_METADATA,
    done_mask,
)
from bench.results.server_metrics import SERVER_METRICS_FILE
from server_under_test.upper_layer.status import WARNING, status_class

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
INGEST = ("C-STORE",)
RETRIEVE = ("C-MOVE", "C-GET")
OPERATIONS = ("C-ECHO", "C-STORE", "C-FIND", "C-MOVE", "C-GET", *HTTP_OPERATIONS)


@dataclass(frozen=True)
class ProtocolSide:
    """One protocol's way of doing a task: its operations, the metrics of its rate and MB/s, and (for DICOMweb) the
    DIMSE rate it is set against: the same unit, or None when DIMSE has no such request (metadata)."""

    operations: tuple[str, ...]
    rate: str
    mb: str | None = None
    dimse_rate: str | None = None


@dataclass(frozen=True)
class ProtocolTask:
    """The same task by each protocol on the same studies: DIMSE's side, and DICOMweb's (one or more requests)."""

    task: str
    dimse: ProtocolSide
    web: tuple[ProtocolSide, ...]

    @property
    def web_operations(self) -> tuple[str, ...]:
        return tuple(op for side in self.web for op in side.operations)


# The top-level ingest figures stay C-STORE's; DICOMweb's stand beside them. A viewer's frames are set against
# C-GET/C-MOVE's frames/s; its metadata requests have no DIMSE counterpart.
PROTOCOL_TASKS = (
    ProtocolTask(
        "ingest",
        ProtocolSide(INGEST, "ingest_instances_per_s", "ingest_mb_per_s"),
        (ProtocolSide((STOW_RS,), "stow_instances_per_s", "stow_mb_per_s", "ingest_instances_per_s"),),
    ),
    ProtocolTask(
        "retrieve",
        ProtocolSide(RETRIEVE, "retrieve_instances_per_s", "retrieve_mb_per_s"),
        (
            ProtocolSide((WADO_RS,), "wado_instances_per_s", "wado_mb_per_s", "retrieve_instances_per_s"),
            ProtocolSide(
                (WADO_RS_FRAMES,), "wado_frames_frames_per_s", "wado_frames_mb_per_s", "retrieve_frames_per_s"
            ),
            ProtocolSide((WADO_RS_METADATA,), "wado_metadata_requests_per_s", "wado_metadata_mb_per_s"),
        ),
    ),
    ProtocolTask(
        "query",
        ProtocolSide(("C-FIND",), "query_requests_per_s"),
        (ProtocolSide((QIDO_RS,), "qido_requests_per_s", None, "query_requests_per_s"),),
    ),
)


def operation_stem(operation: str) -> str:
    """An operation's name in metric names: 'C-STORE' -> 'c_store', 'WADO-RS frames' -> 'wado_rs_frames'."""
    return operation.lower().replace("-", "_").replace(" ", "_")


STUDY_BYTES_FOR_CLAIMS = 30e6  # the seed paper's mean DSA study


# --- loading -----------------------------------------------------------------------------


def load_samples(run_dir: Path) -> pd.DataFrame:
    """samples.csv of a run folder, with an `end` column (response time, Unix s)."""
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    path = run_dir / SAMPLES_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {SAMPLES_FILE} (not a pacsbench run folder, or the run never started)")
    try:
        frame = pd.read_csv(
            path,
            dtype={
                "sop_instance_uid": str,
                "study_instance_uid": str,
                "error": str,
                "user": str,
                "user_type": str,
                "association": str,
                "worker": str,
                "modality": str,
            },
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot parse samples: {exc}") from None
    if "modality" not in frame.columns:  # runs before the column: no study's modality known
        frame["modality"] = ""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}")
    if frame.empty:
        raise UserError(f"{run_dir}: the run has zero samples (no request completed); nothing to report")
    frame["error"] = frame["error"].fillna("")
    frame["user_type"] = frame["user_type"].fillna("")
    frame["modality"] = frame["modality"].fillna("")
    frame["end"] = frame["start"] + frame["latency_ms"] / 1000.0
    return frame


# --- warm-up and windows -----------------------------------------------------------------


@dataclass(frozen=True)
class Warmup:
    """Which leading part of a run is not measured: a number of seconds or a fraction of the run."""

    seconds: float = 0.0
    fraction: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Warmup":
        """'10%' (of the run), '5s' or '5' (seconds), '0' (none)."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%|s)?\s*", text)
        if not match:
            raise UserError(f"--warmup {text!r}: expected a percentage such as 10% or seconds such as 5s")
        value = float(match[1])
        if match[2] == "%":
            if value >= 100:
                raise UserError(f"--warmup {text!r}: the warm-up must be less than 100% of the run")
            return cls(fraction=value / 100)
        return cls(seconds=value)

    def describe(self) -> str:
        if self.fraction:
            return f"the first {self.fraction:.0%} of the run (first request to last response) is warm-up"
        if self.seconds:
            return f"the first {self.seconds:g} s of the run are warm-up"
        return "no warm-up trimmed"

    def rule(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction else f"{self.seconds:g}s"

    def cut(self, first_start: float, last_end: float) -> float:
        """The time measurement begins."""
        return first_start + max(self.seconds, self.fraction * (last_end - first_start))


class SettingsFigures(TypedDict):
    """How a run was cut, in words and figures (Settings.describe)."""

    warmup: str
    warmup_rule: str
    window_seconds: float


DEFAULT_WARMUP = Warmup(fraction=0.10)
DEFAULT_WINDOW_SECONDS = 1.0


@dataclass(frozen=True)
class Settings:
    warmup: Warmup = DEFAULT_WARMUP
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    # Given on the command line: settings that leave nothing to measure are then an error. The
    # defaults never are: a run stopped within seconds is measured as it is and reads "too short".
    chosen: bool = False

    def __post_init__(self) -> None:
        if not self.window_seconds > 0:
            raise UserError(f"--window {self.window_seconds}: must be more than 0 seconds")

    def describe(self) -> SettingsFigures:
        return {
            "warmup": self.warmup.describe(),
            "warmup_rule": self.warmup.rule(),
            "window_seconds": self.window_seconds,
        }


@dataclass(frozen=True)
class Measurement:
    """The rows of one run whose responses arrived after the warm-up and before the stop signal, and the
    window they span; the drain (responses after the stop signal) is counted, not measured."""

    samples: pd.DataFrame
    begin: float
    end: float
    run_start: float
    dropped: int
    window_seconds: float
    drained: int = 0
    drain_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.end - self.begin, 1e-9)

    @property
    def full_windows(self) -> int:
        return int(self.seconds // self.window_seconds)

    def window_index(self, rows: pd.DataFrame) -> np.ndarray:
        return ((rows["end"] - self.begin) // self.window_seconds).astype(int).to_numpy()


def measure(samples: pd.DataFrame, settings: Settings = Settings(), stop_at: float | None = None) -> Measurement:
    """The measured part of a run; `stop_at` is the stop signal's time (Unix s), None when not known.
    Settings that leave nothing to measure are a one-line UserError."""
    first, last_response = float(samples["start"].min()), float(samples["end"].max())
    before_stop = samples if stop_at is None else samples[samples["end"] <= stop_at]
    if before_stop.empty:
        before_stop = samples  # no response before the stop signal: the drain is all there is
    last = float(before_stop["end"].max())
    check_settings(settings, first, last)
    begin = settings.warmup.cut(first, last)
    kept = before_stop[before_stop["end"] >= begin]
    drained = len(samples) - len(before_stop)
    return Measurement(
        kept,
        begin,
        last,
        first,
        len(before_stop) - len(kept),
        settings.window_seconds,
        drained,
        max(last_response - last, 0.0) if drained else 0.0,
    )


def check_settings(settings: Settings, first: float, last: float) -> None:
    """A chosen warm-up as long as the run, or a chosen window longer than what is left to measure, is an error."""
    if not settings.chosen:
        return
    lasted = last - first
    if settings.warmup.seconds and settings.warmup.seconds >= lasted:
        raise UserError(
            f"--warmup {settings.warmup.rule()}: the run lasted only {lasted:.1f} s (first request to "
            "last response before the stop): nothing would be measured"
        )
    span = last - settings.warmup.cut(first, last)
    if settings.window_seconds > span:
        raise UserError(
            f"--window {settings.window_seconds:g}: longer than the measured span ({span:.1f} s after "
            f"the warm-up): not one full window"
        )


def acknowledged(rows: pd.DataFrame, operations: tuple[str, ...]) -> pd.DataFrame:
    return rows[rows["operation"].isin(operations) & done_mask(rows["status"], rows["operation"])]


def requested(rows: pd.DataFrame, operations: tuple[str, ...]) -> pd.DataFrame:
    """Every request of these operations, answered or not: what latency percentiles are taken over."""
    return rows[rows["operation"].isin(operations)]


def warning_mask(status: pd.Series) -> pd.Series:
    """Rows whose status is a warning (B000, B006, B007 ...): stored, and counted as warnings."""
    return status.isin([code for code in status.unique() if status_class(int(code)) == WARNING])


# --- metrics: named figures with per-window values ---------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    operations: tuple[str, ...]
    field: str = ""  # rates: instances, frames, bytes or requests
    quantile: float | None = None  # latencies

    def present(self, m: Measurement) -> bool:
        return bool(m.samples["operation"].isin(self.operations).any())

    def rows(self, m: Measurement) -> pd.DataFrame:
        """A rate counts what was acknowledged; a latency percentile every request, failed ones included."""
        if self.quantile is not None:
            return requested(m.samples, self.operations)
        return acknowledged(m.samples, self.operations)

    def value(self, m: Measurement) -> float | None:
        """Over the whole measured window (the windowed estimate can differ slightly)."""
        rows = self.rows(m)
        if self.quantile is not None:
            return float(rows["latency_ms"].quantile(self.quantile)) if len(rows) else None
        return _amount(rows, self.field) / m.seconds

    def windows(self, m: Measurement) -> Repetition:
        """The run cut into full windows, the units a bootstrap resamples (the whole run if shorter than one)."""
        rows = self.rows(m)
        n = m.full_windows
        index = m.window_index(rows) if n else np.zeros(len(rows), dtype=int)
        inside = index < max(n, 1)
        if self.quantile is not None:
            owner = index[inside]
            order = np.argsort(owner, kind="stable")
            latencies = rows["latency_ms"].to_numpy(dtype=float)[inside][order]
            ends = np.cumsum(np.bincount(owner, minlength=max(n, 1)))[:-1]
            return PooledQuantile(np.split(latencies, ends), self.quantile)
        if n == 0:
            return WindowMeans([_amount(rows, self.field) / m.seconds])
        amounts = _amounts(rows, self.field)[inside]
        return WindowMeans(np.bincount(index[inside], weights=amounts, minlength=n) / m.window_seconds)

    def from_json(self, windows: list[Any]) -> Repetition:
        """The inverse of .to_json() of what `windows` returns (baseline files keep these)."""
        return PooledQuantile(windows, self.quantile) if self.quantile is not None else WindowMeans(windows)


def _amounts(rows: pd.DataFrame, field: str) -> np.ndarray:
    if field == "requests":
        return np.ones(len(rows))
    values = rows[field].to_numpy(dtype=float)
    return values / 1e6 if field == "bytes" else values


def _amount(rows: pd.DataFrame, field: str) -> float:
    return float(_amounts(rows, field).sum())


def _build_metrics() -> dict[str, Metric]:
    metrics: dict[str, Metric] = {}
    for prefix, ops, what in (
        ("ingest", INGEST, "ingest (C-STORE)"),
        ("retrieve", RETRIEVE, "retrieve (C-MOVE/C-GET)"),
        ("stow", (STOW_RS,), "ingest (STOW-RS)"),
        ("wado", (WADO_RS,), "retrieve (WADO-RS)"),
    ):
        for field, unit in (("instances", "instances/s"), ("frames", "frames/s"), ("bytes", "MB/s")):
            name = f"{prefix}_{'mb' if field == 'bytes' else field}_per_s"
            metrics[name] = Metric(name, f"{what} {unit}", unit, True, ops, field=field)
    for prefix, ops, what, fields in (
        ("wado_frames", (WADO_RS_FRAMES,), "retrieve (WADO-RS frames)", ("frames", "bytes")),
        ("wado_metadata", (WADO_RS_METADATA,), "retrieve (WADO-RS metadata)", ("requests", "instances", "bytes")),
    ):
        for field in fields:
            unit = {"requests": "requests/s", "bytes": "MB/s"}.get(field, f"{field}/s")
            name = f"{prefix}_{'mb' if field == 'bytes' else field}_per_s"
            metrics[name] = Metric(name, f"{what} {unit}", unit, True, ops, field=field)
    metrics["query_requests_per_s"] = Metric(
        "query_requests_per_s", "C-FIND requests/s", "requests/s", True, ("C-FIND",), field="requests"
    )
    metrics["qido_requests_per_s"] = Metric(
        "qido_requests_per_s", "QIDO-RS requests/s", "requests/s", True, (QIDO_RS,), field="requests"
    )
    for op in OPERATIONS:
        for label, q in PERCENTILES.items():
            name = f"{operation_stem(op)}_{label}_ms"
            metrics[name] = Metric(name, f"{op} latency {label}", "ms", False, (op,), quantile=q)
    return metrics


METRICS = _build_metrics()
# Figures a person reads first; the comparison shows these as ratios when present.
HEADLINE_METRICS = [
    "ingest_instances_per_s",
    "ingest_frames_per_s",
    "ingest_mb_per_s",
    "retrieve_instances_per_s",
    "retrieve_mb_per_s",
    "query_requests_per_s",
    "c_store_p95_ms",
    "c_find_p95_ms",
    "c_move_p95_ms",
    "c_get_p95_ms",
]


def _protocol_metrics() -> list[str]:
    """The side-by-side figures of DIMSE and DICOMweb (bench.report.protocols): each side's rate, MB/s and the DIMSE
    rate it is set against, and every operation's p50, p95 and p99."""
    names: list[str] = []
    for task in PROTOCOL_TASKS:
        for side in (task.dimse, *task.web):
            names += [name for name in (side.rate, side.mb, side.dimse_rate) if name]
            names += [f"{operation_stem(op)}_{p}_ms" for op in side.operations for p in ("p50", "p95", "p99")]
    return list(dict.fromkeys(names))


PROTOCOL_METRICS = _protocol_metrics()
DICOMWEB_METRICS = [name for name in PROTOCOL_METRICS if name.startswith(("stow", "qido", "wado"))]


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def study_seconds_per_30mb(m: Measurement) -> float | None:
    """Median time one study took to arrive (first send to last response), scaled to a 30 MB study."""
    stores = acknowledged(m.samples, INGEST)
    if stores.empty:
        return None
    studies = stores.groupby("study_instance_uid").agg(
        first=("start", "min"), last=("end", "max"), bytes=("bytes", "sum")
    )
    studies = studies[studies["bytes"] > 0]
    if studies.empty:
        return None
    scaled = (studies["last"] - studies["first"]) * STUDY_BYTES_FOR_CLAIMS / studies["bytes"]
    return float(scaled.median())


# --- tables ------------------------------------------------------------------------------


def _rounded(value: float | np.floating | None, digits: int = 3) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


# Latency percentiles by name (p50 ... p99, max) in ms, with the requests they are over and the failed among them.
LatencyFigures = dict[str, float | None]


class Rates(TypedDict):
    """What was acknowledged and its rates per second over the measured span."""

    instances: int
    frames: int
    bytes: int
    instances_per_s: float | None
    frames_per_s: float | None
    mb_per_s: float | None


class OperationFigures(Rates):
    """The figures of one operation or user type (breakdown)."""

    requests: int
    failed: int
    warnings: int
    requests_per_s: float | None
    latency_ms: LatencyFigures


class ErrorCount(TypedDict):
    """Failed requests of one operation and DICOM status (errors_by_status)."""

    operation: str
    status: str
    count: int
    example: str


class WindowFigures(TypedDict):
    """One window of the run's timeline (windows_table); the retrieve rates only when something was retrieved."""

    start_s: float | None
    warmup: bool
    instances_per_s: float | None
    frames_per_s: float | None
    mb_per_s: float | None
    retrieve_instances_per_s: NotRequired[float | None]
    retrieve_mb_per_s: NotRequired[float | None]


class DrainFigures(TypedDict):
    """Requests answered after the stop signal, and for how long."""

    requests: int
    seconds: float | None


class RunFigures(Rates):
    """The figures of one run (summarize): the fields of summary.json a run's report starts from."""

    settings: SettingsFigures
    warmup_seconds: float | None
    warmup_requests_dropped: int
    window_seconds: float | None
    drain: DrainFigures
    requests: int
    warnings: int
    latency_ms: LatencyFigures
    failures: int
    failures_by_error: dict[str, int]
    errors_by_status: list[ErrorCount]
    users: int
    associations: int
    operations: dict[str, OperationFigures]
    user_types: dict[str, OperationFigures]
    users_by_type: dict[str, int]
    modalities: dict[str, dict[str, OperationFigures]]
    studies: list[StudyFigures]
    studies_by_modality: dict[str, ModalityStudies]
    windows: list[WindowFigures]
    metrics: dict[str, float | None]


def latency_percentiles(rows: pd.DataFrame) -> LatencyFigures:
    """Percentiles of every request's latency (failures and timeouts at their elapsed time), with
    the number of failed requests among them beside."""
    failed = int((~done_mask(rows["status"], rows["operation"])).sum())
    latency = rows["latency_ms"]
    if latency.empty:
        return {name: None for name in [*PERCENTILES, "max"]} | {"requests": 0, "failed": 0}
    out: LatencyFigures = {name: _rounded(latency.quantile(q)) for name, q in PERCENTILES.items()}
    return out | {"max": _rounded(latency.max()), "requests": int(len(rows)), "failed": failed}


def _rates(ok: pd.DataFrame, seconds: float) -> Rates:
    return {
        "instances": int(ok["instances"].sum()),
        "frames": int(ok["frames"].sum()),
        "bytes": int(ok["bytes"].sum()),
        "instances_per_s": _rounded(ok["instances"].sum() / seconds),
        "frames_per_s": _rounded(ok["frames"].sum() / seconds),
        "mb_per_s": _rounded(ok["bytes"].sum() / 1e6 / seconds),
    }


def breakdown(m: Measurement, column: str, samples: pd.DataFrame | None = None) -> dict[str, OperationFigures]:
    """Requests, throughput and latency per value of `column` (operation, user_type) of `samples`
    (default: the measured window's)."""
    out: dict[str, OperationFigures] = {}
    for key, rows in (m.samples if samples is None else samples).groupby(column, sort=True):
        succeeded = done_mask(rows["status"], rows["operation"])
        ok = rows[succeeded]
        out[str(key)] = {
            "requests": int(len(rows)),
            "failed": int((~succeeded).sum()),
            "warnings": int(warning_mask(rows["status"]).sum()),
            "requests_per_s": _rounded(len(rows) / m.seconds),
            **_rates(ok, m.seconds),
            "latency_ms": latency_percentiles(rows),
        }
    return out


def modality_breakdown(m: Measurement) -> dict[str, dict[str, OperationFigures]]:
    """Per study modality ('CT', 'CT\\PT' ...): the operations' figures over the measured window.

    A C-STORE's modality is its study's; a retrieval's, the study's as the worklist gave it."""
    known = m.samples[m.samples["modality"] != ""]
    return {str(modality): breakdown(m, "operation", rows) for modality, rows in known.groupby("modality", sort=True)}


class StudyFigures(TypedDict):
    """One study the modalities sent (study_times): when it was received whole, when it could be found."""

    study_instance_uid: str
    modality: str
    instances: int
    frames: int
    bytes: int
    receive_seconds: float | None  # from its first C-STORE sent to its last acknowledged
    instances_per_s: float | None
    queryable_seconds: float | None  # from its last C-STORE to the C-FIND that counted all of it (QUERYABLE)
    retrieve_seconds: float | None  # the C-MOVE of the whole study back, by the modality that sent it
    retrieve_instances_per_s: float | None


class ModalityStudies(TypedDict):
    """The studies of one modality (study_summary): how many, and the median and longest times."""

    studies: int
    instances_per_study: float | None
    receive_seconds_p50: float | None
    receive_seconds_max: float | None
    queryable_seconds_p50: float | None
    queryable_seconds_max: float | None


STUDY_LIST_LIMIT = 20  # studies listed one by one in summary.json; the rest only in their modality's summary


def study_times(samples: pd.DataFrame) -> list[StudyFigures]:
    """Every study the whole run sent (warm-up included: a study spans it), largest first.

    Only complete studies of a modality that checked them (check_queryable) have a queryable time."""
    stores = acknowledged(samples, INGEST)
    stores = stores[stores["study_instance_uid"].fillna("") != ""]
    queryable = samples[(samples["operation"] == "QUERYABLE") & (samples["error"] == "")]
    moves = acknowledged(samples[samples["user_type"] == "modality"], ("C-MOVE",))
    out: list[StudyFigures] = []
    for study, rows in stores.groupby("study_instance_uid", sort=False):
        receive = float(rows["end"].max() - rows["start"].min())
        found = queryable[queryable["study_instance_uid"] == study]["latency_ms"]
        moved = moves[moves["study_instance_uid"] == study]
        move_seconds = float(moved["latency_ms"].iloc[0]) / 1000.0 if len(moved) else None
        out.append(
            {
                "study_instance_uid": str(study),
                "modality": str(rows["modality"].iloc[0]),
                "instances": int(rows["instances"].sum()),
                "frames": int(rows["frames"].sum()),
                "bytes": int(rows["bytes"].sum()),
                "receive_seconds": _rounded(receive),
                "instances_per_s": _rounded(rows["instances"].sum() / receive) if receive > 0 else None,
                "queryable_seconds": _rounded(float(found.iloc[0]) / 1000.0) if len(found) else None,
                "retrieve_seconds": _rounded(move_seconds),
                "retrieve_instances_per_s": _rounded(moved["instances"].iloc[0] / move_seconds)
                if move_seconds
                else None,
            }
        )
    return sorted(out, key=lambda s: -s["instances"])


def study_summary(studies: list[StudyFigures]) -> dict[str, ModalityStudies]:
    """Per modality: studies, instances per study, median and longest times to receive and to be queryable."""
    out: dict[str, ModalityStudies] = {}
    for modality in sorted({s["modality"] for s in studies}):
        mine = [s for s in studies if s["modality"] == modality]
        receive = pd.Series([s["receive_seconds"] for s in mine], dtype=float).dropna()
        found = pd.Series([s["queryable_seconds"] for s in mine], dtype=float).dropna()
        out[modality] = {
            "studies": len(mine),
            "instances_per_study": _rounded(sum(s["instances"] for s in mine) / len(mine)),
            "receive_seconds_p50": _rounded(receive.median()) if len(receive) else None,
            "receive_seconds_max": _rounded(receive.max()) if len(receive) else None,
            "queryable_seconds_p50": _rounded(found.median()) if len(found) else None,
            "queryable_seconds_max": _rounded(found.max()) if len(found) else None,
        }
    return out


def status_text(status: int, operation: str = "") -> str:
    """A status as people read it: DIMSE in hex, a DICOMweb request's as HTTP."""
    if status < 0:
        return "no response"
    return f"HTTP {int(status)}" if operation in HTTP_OPERATIONS else f"0x{int(status):04X}"


def errors_by_status(samples: pd.DataFrame) -> list[ErrorCount]:
    """Failed requests per operation and DICOM status, with the most frequent error text."""
    failed = samples[~done_mask(samples["status"], samples["operation"]) | (samples["error"] != "")]
    rows: list[ErrorCount] = []
    for (operation, status), group in failed.groupby(["operation", "status"], sort=True):
        rows.append(
            {
                "operation": str(operation),
                # pandas types group keys as Hashable; this one is a value of the integer status column
                "status": status_text(int(cast(SupportsInt, status)), str(operation)),
                "count": int(len(group)),
                "example": str(group["error"].mode().iloc[0]) if (group["error"] != "").any() else "",
            }
        )
    return sorted(rows, key=lambda r: -r["count"])


def timeline(samples: pd.DataFrame, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> pd.DataFrame:
    """Acknowledged ingest and retrieve per window of response time, over the whole run (warm-up included)."""
    t0 = samples["start"].min()
    windows = pd.RangeIndex(0, int((samples["end"].max() - t0) // window_seconds) + 1, name="window")
    out = pd.DataFrame(index=windows)
    for prefix, ops in (("", INGEST), ("retrieve_", RETRIEVE)):
        ok = acknowledged(samples, ops)
        index = ((ok["end"] - t0) // window_seconds).astype(int)
        bins = ok.groupby(index).agg(instances=("instances", "sum"), frames=("frames", "sum"), bytes=("bytes", "sum"))
        bins = bins.reindex(windows, fill_value=0)
        out[f"{prefix}instances"] = bins["instances"] / window_seconds
        out[f"{prefix}frames"] = bins["frames"] / window_seconds
        out[f"{prefix}mb"] = bins["bytes"] / 1e6 / window_seconds
    out["seconds"] = out.index * window_seconds
    return out


def windows_table(samples: pd.DataFrame, m: Measurement) -> list[WindowFigures]:
    """Ingest (and retrieve) rates per window over the whole run; `warmup` marks windows before measurement."""
    bins = timeline(samples, m.window_seconds)
    rows: list[WindowFigures] = []
    for _, b in bins.iterrows():
        row: WindowFigures = {
            "start_s": _rounded(b["seconds"]),
            "warmup": bool(m.run_start + b["seconds"] < m.begin),
            "instances_per_s": _rounded(b["instances"]),
            "frames_per_s": _rounded(b["frames"]),
            "mb_per_s": _rounded(b["mb"]),
        }
        if b["retrieve_instances"]:
            row["retrieve_instances_per_s"] = _rounded(b["retrieve_instances"])
            row["retrieve_mb_per_s"] = _rounded(b["retrieve_mb"])
        rows.append(row)
    return rows


def load_server_metrics(run_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """server_metrics.csv (a `time` column in Unix s, then numeric columns: pacsbench's own,
    bench.results.server_metrics.COLUMNS, or any other) and a note; (None, why) when absent or unusable."""
    path = run_dir / SERVER_METRICS_FILE
    if not path.is_file():
        return None, "no server metrics recorded"
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        return None, f"{SERVER_METRICS_FILE} unreadable: {exc}"
    numeric = frame.select_dtypes("number")
    if "time" not in numeric.columns or numeric.shape[1] < 2 or numeric.empty:
        return None, f"{SERVER_METRICS_FILE} has no numeric 'time' column and values"
    return numeric, ""


def summarize(samples: pd.DataFrame, settings: Settings = Settings(), stop_at: float | None = None) -> RunFigures:
    """The figures of one run (after the warm-up, before the stop signal); the top-level rates are ingest (C-STORE)."""
    m = measure(samples, settings, stop_at)
    stores = m.samples[m.samples["operation"].isin(INGEST)]
    ok = stores[done_mask(stores["status"], stores["operation"])]
    failures = samples[samples["error"] != ""]  # the whole run: a warm-up does not excuse a failure
    present = [name for name, spec in METRICS.items() if spec.present(m)]
    studies = study_times(samples)
    return {
        "settings": settings.describe(),
        "warmup_seconds": _rounded(m.begin - m.run_start),
        "warmup_requests_dropped": m.dropped,
        "window_seconds": _rounded(m.seconds),
        "drain": {"requests": m.drained, "seconds": _rounded(m.drain_seconds)},
        "requests": int(len(m.samples)),
        **_rates(ok, m.seconds),
        "warnings": int(warning_mask(stores["status"]).sum()),
        "latency_ms": latency_percentiles(stores),
        "failures": int(len(failures)),
        "failures_by_error": {str(k): int(v) for k, v in failures["error"].value_counts().items()},
        "errors_by_status": errors_by_status(samples),
        "users": int(m.samples["user"].nunique()),
        "associations": int(m.samples["association"].nunique()),
        "operations": breakdown(m, "operation"),
        "user_types": breakdown(m, "user_type"),
        "users_by_type": {str(k): int(v) for k, v in m.samples.groupby("user_type")["user"].nunique().items()},
        "modalities": modality_breakdown(m),
        "studies": studies[:STUDY_LIST_LIMIT],
        "studies_by_modality": study_summary(studies),
        "windows": windows_table(samples, m),
        "metrics": {name: _rounded(METRICS[name].value(m)) for name in present}
        | {"study_seconds_per_30mb": _rounded(study_seconds_per_30mb(m))},
    }
