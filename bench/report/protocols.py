"""DIMSE and DICOMweb side by side: each task (ingest, retrieve, query) by each protocol on copies of the same
pool studies, with the estimates and their 95% intervals, the latency percentiles, and a latency CDF per task."""

from __future__ import annotations

import numpy as np

from bench.analysis.aggregate import METRICS, PROTOCOL_TASKS, ProtocolSide, operation_stem, requested
from bench.analysis.compare import Group
from bench.report import figures
from bench.report.model import Figure, Note, Section, Table
from bench.report.text import num, with_interval

TITLE = "DIMSE and DICOMweb side by side"
_HEADERS = [
    "target",
    "task",
    "protocol",
    "operation",
    "rate [95% CI]",
    "MB/s [95% CI]",
    "p50 / p95 / p99 ms",
    "failed",
    "rate to DIMSE's",
]
_NOTE = (
    "Both protocols in the same runs, on copies of the same pool studies, against the same archive. A C-STORE "
    "carries one instance, a STOW-RS a study (or instances_per_request of it), a C-GET, C-MOVE or WADO-RS a "
    "whole study, a WADO-RS frames request frames_per_request frames of one instance, a WADO-RS metadata request "
    "a study's DICOM JSON: compare the rates (instances/s; frames/s for frames, set against C-GET/C-MOVE's "
    "frames/s; requests/s for queries and metadata, which DIMSE has no request for); latencies are per request. "
    "Rates count what the archive acknowledged, percentiles every request."
)


def _latency_cell(estimates: dict, operation: str) -> str:
    values = [estimates.get(f"{operation_stem(operation)}_{p}_ms") for p in ("p50", "p95", "p99")]
    return " / ".join(num(v["value"] if v else None) for v in values)


def _row(group: dict, task: str, operation: str, side: ProtocolSide, web: bool) -> list[str]:
    estimates, failed = group["estimates"], group.get("failed_by_operation", {})
    rate = estimates.get(side.rate)
    return [
        group["label"],
        task,
        "DICOMweb" if web else "DIMSE",
        operation,
        f"{with_interval(rate, 2)} {METRICS[side.rate].unit}",
        with_interval(estimates.get(side.mb)) if side.mb else "",
        _latency_cell(estimates, operation),
        f"{failed.get(operation, 0):,}",
        _ratio(rate, estimates.get(side.dimse_rate) if side.dimse_rate else None, side) if web else "",
    ]


def _rows(group: dict) -> list[list[str]]:
    """One row per operation the group measured, task by task, DIMSE first."""
    estimates = group["estimates"]
    rows = []
    for task in PROTOCOL_TASKS:
        for side, web in [(task.dimse, False), *((side, True) for side in task.web)]:
            for operation in side.operations:
                if f"{operation_stem(operation)}_p50_ms" in estimates:  # measured in this group
                    rows.append(_row(group, task.task, operation, side, web))
    return rows


def _ratio(rate: dict | None, dimse_rate: dict | None, side: ProtocolSide) -> str:
    if side.dimse_rate is None:
        return "no DIMSE counterpart"
    if not rate or not dimse_rate or not dimse_rate["value"]:
        return "no DIMSE figure"
    return f"{rate['value'] / dimse_rate['value']:.2f}"


def _ceiling_notes(groups: list[dict]) -> str:
    """Each DICOMweb figure against the harness's own ceiling for that request (`pacsbench calibrate`)."""
    several = len(groups) > 1
    notes = [
        f"{group['label']}: {verdict['note']}" if several else verdict["note"]
        for group in groups
        for verdict in group.get("dicomweb_calibration") or []
    ]
    return "Harness ceilings: " + "; ".join(notes) + "." if notes else ""


def _cdf_figure(groups: list[Group]) -> Figure | None:
    """One panel per task with both protocols' latency CDFs, one line per target and operation."""
    several_loads = len({g.users for g in groups}) > 1
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for task in PROTOCOL_TASKS:
        lines, web_measured = [], []
        for group in groups:
            for operation in (*task.dimse.operations, *task.web_operations):
                latencies = np.concatenate(
                    [requested(m.samples, (operation,))["latency_ms"].to_numpy() for m in group.measurements]
                )
                if len(latencies):
                    label = operation if len(groups) == 1 else f"{group.label(several_loads)}: {operation}"
                    lines.append((label, latencies))
                    if operation in task.web_operations and operation not in web_measured:
                        web_measured.append(operation)
        if web_measured:
            panels[f"{task.task}: {' / '.join(task.dimse.operations)} vs {' / '.join(web_measured)}"] = lines
    if not panels:
        return None
    return Figure(
        figures.latency_cdf_png(panels),
        "latency CDFs per protocol",
        "Share of requests answered within a given latency, per task and protocol, after the warm-up (failed "
        "requests and timeouts at their elapsed time).",
    )


def protocols_section(data: dict, groups: list[Group]) -> Section | None:
    """The side-by-side section, when a run measured a DICOMweb request (None otherwise)."""
    rows = [row for group in data["groups"] for row in _rows(group)]
    if not any(row[2] == "DICOMweb" for row in rows):
        return None
    blocks: list = [Note(_NOTE), Table(_HEADERS, rows, wide=True)]
    if ceilings := _ceiling_notes(data["groups"]):
        blocks.append(Note(ceilings))
    if figure := _cdf_figure(groups):
        blocks.append(figure)
    return Section(TITLE, blocks)
