"""The record files of a run folder (and of matrix, comparison and baseline files) as pydantic models.

RECORD_MODELS maps each file to its model; the run-folder reference in the docs is generated
from their JSON Schema (`model_json_schema()`), so the field descriptions here are the
documentation. run.json's model and parts are in bench.results.run_record; the base (schema
version, writing and reading) in bench.results.record_base.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from bench.results.record_base import Part, Record
from bench.results.run_record import RunRecord, VerifyRecord
from bench.results.samples import SAMPLES_FILE

RUN_FILE = "run.json"
MATRIX_FILE = "matrix.json"
SUMMARY_FILE = "summary.json"
VERIFY_FILE = "verify.json"
BASELINE_FILE = "baseline.json"  # the name `pacsbench baseline save --out` is usually given; any name is read


class MatrixRun(Part):
    """One run of a matrix."""

    folder: str = Field(min_length=1, description="The run folder, relative to the matrix folder (or absolute).")
    target: str = Field(min_length=1, description="The target's name in the matrix.")
    repetition: int = Field(default=1, description="The repetition, from 1.")
    hypervisor: str | None = Field(default=None, description="The hypervisor detected under the target.")
    status: str | None = Field(default=None, description="The run's status (run.json).")


class MatrixRecord(Record):
    """matrix.json: one scenario against several targets, order rotated per repetition."""

    scenario: str = Field(default="", description="The scenario's name; every run must be of it.")
    scenario_file: str | None = Field(default=None, description="The scenario file run.")
    targets: list[str] = Field(default_factory=list, description="The targets, as named on the command line.")
    repeat: int | None = Field(default=None, description="Repetitions per target.")
    order: str | None = Field(default=None, description="How the order was chosen (rotated: ABC, BCA, CAB).")
    sequence: list[list[str]] = Field(
        default_factory=list, description="The targets of each repetition, in the order they ran."
    )
    sync_before_each_run: bool | None = Field(
        default=None, description="Whether dirty pages were written out before each run."
    )
    runs: list[MatrixRun] = Field(min_length=1, description="The runs, in the order they ran.")


class SummaryRecord(Record):
    """summary.json: the figures of a report (one run) or of a comparison, as the page shows them.

    A run's summary has the run's figures at the top level; a comparison's has `groups` and
    `ratios`. The figures' own shapes belong to the report (bench.report), which builds its
    sections from them: they are kept open here (Any) until that model is settled."""

    # One run's report.
    run_id: str | None = Field(default=None, description="The run reported on.")
    scenario: str | None = Field(default=None, description="The scenario's name.")
    target: str | None = Field(default=None, description="The target's label.")
    settings: dict[str, Any] | None = Field(
        default=None, description="The warm-up and window settings the figures were cut with."
    )
    warmup_seconds: float | None = Field(default=None, description="Seconds of warm-up left out.")
    warmup_requests_dropped: int | None = Field(default=None, description="Requests of the warm-up left out.")
    window_seconds: float | None = Field(default=None, description="The measured span.")
    drain: dict[str, Any] | None = Field(
        default=None, description="Requests answered after the stop signal, and for how long."
    )
    requests: int | None = Field(default=None, description="Requests in the measured span.")
    instances: int | None = Field(default=None, description="Instances acknowledged (C-STORE) in the measured span.")
    frames: int | None = Field(default=None, description="Their frames.")
    bytes: int | None = Field(default=None, description="Their bytes.")
    instances_per_s: float | None = Field(default=None, description="Ingest: acknowledged instances per second.")
    frames_per_s: float | None = Field(default=None, description="Ingest frames per second.")
    mb_per_s: float | None = Field(default=None, description="Ingest MB per second.")
    warnings: int | None = Field(default=None, description="C-STOREs acknowledged with a warning status.")
    latency_ms: dict[str, Any] | None = Field(
        default=None, description="C-STORE latency percentiles (p50, p95, p99 ...)."
    )
    failures: int | None = Field(default=None, description="Failed requests of the whole run.")
    failures_by_error: dict[str, int] | None = Field(default=None, description="Failed requests by error text.")
    errors_by_status: list[dict[str, Any]] | None = Field(
        default=None, description="Failed requests by operation and status."
    )
    users: int | None = Field(default=None, description="Users that made requests.")
    associations: int | None = Field(default=None, description="Associations opened.")
    operations: dict[str, Any] | None = Field(default=None, description="Figures per DIMSE operation.")
    user_types: dict[str, Any] | None = Field(default=None, description="Figures per user type.")
    users_by_type: dict[str, int] | None = Field(default=None, description="Users per user type.")
    modalities: dict[str, Any] | None = Field(
        default=None,
        description="Per study modality (samples.csv modality: CT, MR, CT\\PT ...): figures per operation "
        "(instances/s, frames/s, MB/s, latency).",
    )
    studies: list[dict[str, Any]] | None = Field(
        default=None,
        description="The largest studies sent (up to 20): time to receive each (first C-STORE to last "
        "acknowledged), to be queryable (QUERYABLE) and to be moved back (a modality's move_after).",
    )
    studies_by_modality: dict[str, Any] | None = Field(
        default=None, description="Per modality: studies sent, instances per study, median and longest times."
    )
    windows: Any = Field(default=None, description="The per-window table.")
    metrics: dict[str, float | None] | None = Field(default=None, description="Every metric of the run by name.")
    estimates: dict[str, Any] | None = Field(default=None, description="Headline metrics with their 95% intervals.")
    calibration: dict[str, Any] | None = Field(default=None, description="Ingest against the harness's ceiling.")
    retrieve_calibration: dict[str, Any] | None = Field(
        default=None, description="Retrieval against the harness's ceiling."
    )
    dicomweb_calibration: list[dict[str, Any]] | None = Field(
        default=None, description="STOW-RS and WADO-RS against the harness's own DICOMweb ceilings (one per request)."
    )
    budget: dict[str, Any] | None = Field(default=None, description="The target's budget (run.json target.budget).")
    bound_by: dict[str, Any] | None = Field(default=None, description="What bounded the figures, with its evidence.")
    growth: dict[str, Any] | None = Field(
        default=None, description="The archive's growth per hour (memory, files, threads)."
    )
    claims: Any = Field(default=None, description="The claims judged against the figures.")
    environment: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="What the target ran on (a comparison: one entry per run)."
    )
    hypervisor: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None,
        description="The hypervisor's view of the archive's VM (esxi targets: CPU ready, co-stop, memory, disk "
        "latency from ESXi's counters), summarised per run.",
    )
    integrity: str | None = Field(default=None, description="The verification in words.")
    status: str | None = Field(default=None, description="The run's status.")
    notes: list[str] | None = Field(default=None, description="What a reader must know before the figures.")
    faults: list[dict[str, Any]] | None = Field(default=None, description="The faults injected (run.json faults).")
    # A comparison.
    baseline_target: str | None = Field(default=None, description="The target the others are divided by.")
    groups: list[dict[str, Any]] | None = Field(default=None, description="One entry per target and load level.")
    ratios: list[dict[str, Any]] | None = Field(
        default=None, description="Each target against the baseline, per metric."
    )
    budgets_note: str | None = Field(default=None, description="Set when the runs' budgets differ.")
    evidence_notes: list[str] | None = Field(default=None, description="Intervals that rest on less than repetitions.")
    created: str | None = Field(default=None, description="When the comparison was made (UTC).")


class BaselineMetric(Part):
    """One metric kept by a baseline: its estimate and the per-window values its interval needs."""

    label: str = Field(description="The metric in words.")
    unit: str = Field(description="Its unit.")
    higher_is_better: bool = Field(description="Throughputs: yes; latencies: no.")
    value: float = Field(description="The point estimate over the repetitions.")
    repetitions: list[list[Any]] = Field(
        description="Per repetition, the per-window values (latency windows: lists of latencies)."
    )


class BaselineSettings(Part):
    """How the baseline's runs were cut; the gate cuts a new run the same way."""

    warmup_rule: str = Field(default="10%", description="The warm-up rule (e.g. 10%, or 30s).")
    window_seconds: float = Field(default=1.0, description="The window length.")


class BaselineRecord(Record):
    """A gate baseline (`pacsbench baseline save RUN --out FILE`): a run's figures to hold later runs to."""

    format: Literal[1] = Field(
        default=1, description="The baseline format of releases before schema_version (always 1)."
    )
    pacsbench: str | None = Field(default=None, description="The pacsbench version that saved it.")
    scenario: str = Field(description="The scenario's name: a gated run must be of it.")
    runs: list[str] = Field(default_factory=list, description="The run folders it was saved from.")
    targets: list[str] = Field(default_factory=list, description="Their targets.")
    settings: BaselineSettings = Field(default_factory=lambda: BaselineSettings(), description="How the runs were cut.")
    metrics: dict[str, BaselineMetric] = Field(description="The metrics kept, by name.")


class SampleRow(Part):
    """One row of samples.csv: one DICOM request (the columns, in order; a CSV file, no schema_version).

    For the reference only: the rows are written from bench.results.samples.Sample (a test keeps the two alike)."""

    start: float = Field(description="Unix time (s, microseconds) the request was sent, on the master's clock.")
    worker: str = Field(description="host-pid of the load process.")
    user: str = Field(description="The locust user, unique in the run (w<N>- prefix in worker processes).")
    user_type: str = Field(description="modality, workstation, query or echo: the role the user plays.")
    association: str = Field(description="The association (changes when a user re-associates).")
    operation: str = Field(
        description="C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, ASSOCIATE for a failed association, or QUERYABLE: "
        "from a study's last C-STORE until a study-level C-FIND counted all its instances (a modality's "
        "check_queryable)."
    )
    sop_instance_uid: str = Field(description="The instance a C-STORE sent (else empty).")
    study_instance_uid: str = Field(description="The study the request concerned (else empty).")
    instances: int = Field(description="Instances the request carried (1 for a C-STORE).")
    frames: int = Field(description="Their frames.")
    bytes: int = Field(description="Their bytes.")
    latency_ms: float = Field(description="Request to response, in milliseconds (exact, not locust's rounding).")
    status: int = Field(description="The DICOM status (0 = success); -1 when no response came back.")
    error: str = Field(description="Empty on success; else why it failed.")
    modality: str = Field(
        default="",
        description="The modalities of the request's study, as Modalities in Study gives them (sorted, "
        "backslash-separated: CT, MR, CT\\PT, XA); empty when the request concerned no study or it is unknown "
        "(runs before this column have none).",
    )


RECORD_MODELS: dict[str, type[BaseModel]] = {
    RUN_FILE: RunRecord,
    MATRIX_FILE: MatrixRecord,
    SUMMARY_FILE: SummaryRecord,
    BASELINE_FILE: BaselineRecord,
    VERIFY_FILE: VerifyRecord,
    SAMPLES_FILE: SampleRow,
}
