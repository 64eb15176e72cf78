"""The per-run sections: errors by DICOM status over all runs, and each run's breakdown per operation and
user type, its errors, integrity and measured span; the notes a reader of one run needs before its figures."""

from __future__ import annotations

from bench.analysis.compare import Group
from bench.analysis.runset import RunData
from bench.report import facts
from bench.report.model import Note, Part, Section, Table
from bench.report.text import drain_text, num, percentile_cell
from bench.results.run_record import VerifyRecord

_ERROR_SUMMARY_HEADERS = ["target", "run", "operation", "DICOM status", "count", "most frequent error"]


def _all_error_rows(groups: list[Group]) -> list[list[str]]:
    return [
        [run.target, run.folder.name, *row]
        for g in groups
        for run, s in zip(g.runs, g.summaries)
        for row in _error_rows(s)
    ]


_BREAKDOWN_HEADERS = [
    "",
    "requests",
    "failed",
    "warnings (stored)",
    "instances/s",
    "frames/s",
    "MB/s",
    "p50 ms",
    "p90 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
]


def _breakdown_rows(table: dict) -> list[list[str]]:
    return [
        [
            key,
            str(v["requests"]),
            str(v["failed"]),
            str(v.get("warnings", 0)),
            num(v["instances_per_s"], 2),
            num(v["frames_per_s"]),
            num(v["mb_per_s"]),
            *(percentile_cell(v["latency_ms"], p) for p in ("p50", "p90", "p95", "p99", "max")),
        ]
        for key, v in table.items()
    ]


_ERROR_HEADERS = ["operation", "DICOM status", "count", "most frequent error"]


def _error_rows(summary: dict) -> list[list[str]]:
    return [[e["operation"], e["status"], str(e["count"]), e["example"]] for e in summary["errors_by_status"]]


def _measured_note(s: dict) -> str:
    drain = s.get("drain") or {}
    return (
        f"Measured {s['window_seconds']:g} s after {s['warmup_seconds']:g} s of warm-up "
        f"({s['warmup_requests_dropped']} requests dropped); {drain_text(drain)}; {s['users']} users, "
        f"{s['associations']} associations."
    )


def _run_part(run: RunData, summary: dict, open_: bool) -> Part:
    """One run's breakdowns, errors, integrity and measured span."""
    errors = (
        Table(_ERROR_HEADERS, _error_rows(summary), "Errors by DICOM status (whole run, warm-up included)")
        if summary["errors_by_status"]
        else Note("Errors by DICOM status (whole run, warm-up included): no failed requests.")
    )
    return Part(
        f"{run.target}, run {run.folder.name}, repetition {run.repetition}",
        [
            Table(["operation", *_BREAKDOWN_HEADERS[1:]], _breakdown_rows(summary["operations"]), "Per operation"),
            Table(["user type", *_BREAKDOWN_HEADERS[1:]], _breakdown_rows(summary["user_types"]), "Per user type"),
            errors,
            Note(f"Integrity: {run_integrity(run)}"),
            Note(_measured_note(summary)),
        ],
        open_,
    )


def errors_section(groups: list[Group]) -> Section:
    """Failed requests of every run, by operation and DICOM status."""
    rows = _all_error_rows(groups)
    return Section(
        "Errors by DICOM status (whole runs)",
        [Table(_ERROR_SUMMARY_HEADERS, rows) if rows else Note("No failed requests.")],
    )


def runs_section(groups: list[Group]) -> Section:
    """One part per run; the HTML opens it when the report has only that run."""
    single = len(groups) == 1 and len(groups[0].runs) == 1
    return Section(
        "Runs",
        [_run_part(run, summary, single) for g in groups for run, summary in zip(g.runs, g.summaries)],
    )


def _integrity_note(verify: VerifyRecord | None, later: list[VerifyRecord] | None = None) -> str:
    """run.json["verify"] in words (pacsbench verify, or run --verify), and the latest later
    verification (run.json["verify_later"]) when there is one: a loss found later is never hidden."""
    if later:
        first = _integrity_note(verify)
        return f"{_integrity_note(later[-1])} (latest of {len(later) + 1} verifications; the first: {first})"
    if not verify:
        return "not verified (pacsbench run --verify, or pacsbench verify RUN)"
    if verify.ok:
        return f"verified: all {verify.instances:,} acknowledged instances returned byte-identical"
    return (
        f"VERIFICATION FAILED: {verify.missing} lost, {verify.different} changed, "
        f"{verify.retrieved_different} retrieved changed, of {verify.instances:,} acknowledged"
    )


def run_notes(run: RunData) -> list[str]:
    """What a reader of one run must know before its figures: it stopped early, its archive recycled."""
    notes = []
    if (status := facts.run_status(run)).startswith("stopped:"):
        detail = facts.stop_detail(run)
        notes.append(
            f"Run {status}{f' ({detail})' if detail else ''}: the load ended early; the figures cover it up to then."
        )
    if recycled := facts.recycling(run):
        notes.append(
            f"The archive recycled {recycled.recycled_studies:,} studies ({recycled.recycled_instances:,} instances, "
            f"{recycled.recycled_bytes / 1e9:.2f} GB) at its capacity of "
            f"{(recycled.capacity_bytes or 0) / 1e9:.2f} GB; "
            "recycled studies are excluded from verify."
        )
    return notes


def run_integrity(run: RunData) -> str:
    """The run's verifications in words: summary.json's "integrity", the headline's and the run part's."""
    return _integrity_note(facts.verification(run), facts.later_verifications(run))
