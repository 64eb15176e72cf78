"""DIMSE and DICOMweb side by side: each task (ingest, retrieve, query) by each protocol on copies of the same
pool studies, with the estimates and their 95% intervals, the latency percentiles, and a latency CDF per task."""

from __future__ import annotations

import numpy as np

from bench.analysis.aggregate import METRICS, PROTOCOL_TASKS, requested
from bench.analysis.compare import Group
from bench.report import figures
from bench.report.model import Figure, Note, Section, Table
from bench.report.text import num, with_interval
from bench.results.samples import HTTP_OPERATIONS

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
    "whole study: compare the rates (instances/s; requests/s for queries); latencies are per request. "
    "Rates count what the archive acknowledged, percentiles every request."
)


def _rate_metric(prefix: str) -> tuple[str, str | None]:
    """The rate and MB/s metric names of a protocol's side of a task (queries have no MB/s)."""
    if prefix in ("query", "qido"):
        return f"{prefix}_requests_per_s", None
    return f"{prefix}_instances_per_s", f"{prefix}_mb_per_s"


def _latency_cell(estimates: dict, operation: str) -> str:
    name = operation.lower().replace("-", "_")
    values = [estimates.get(f"{name}_{p}_ms") for p in ("p50", "p95", "p99")]
    return " / ".join(num(v["value"] if v else None) for v in values)


def _rows(group: dict) -> list[list[str]]:
    """One row per operation the group measured, task by task, DIMSE first."""
    estimates, failed = group["estimates"], group.get("failed_by_operation", {})
    rows = []
    for task, dimse, web, dimse_prefix, web_prefix in PROTOCOL_TASKS:
        dimse_rate = estimates.get(_rate_metric(dimse_prefix)[0])
        for operation, prefix in [*((op, dimse_prefix) for op in dimse), (web, web_prefix)]:
            if f"{operation.lower().replace('-', '_')}_p50_ms" not in estimates:
                continue  # not measured in this group
            rate_name, mb_name = _rate_metric(prefix)
            rate = estimates.get(rate_name)
            unit = METRICS[rate_name].unit
            ratio = "" if operation not in HTTP_OPERATIONS else _ratio(rate, dimse_rate)
            rows.append(
                [
                    group["label"],
                    task,
                    "DICOMweb" if operation in HTTP_OPERATIONS else "DIMSE",
                    operation,
                    f"{with_interval(rate, 2)} {unit}",
                    with_interval(estimates.get(mb_name)) if mb_name else "",
                    _latency_cell(estimates, operation),
                    f"{failed.get(operation, 0):,}",
                    ratio,
                ]
            )
    return rows


def _ratio(rate: dict | None, dimse_rate: dict | None) -> str:
    if not rate or not dimse_rate or not dimse_rate["value"]:
        return "no DIMSE figure"
    return f"{rate['value'] / dimse_rate['value']:.2f}"


def _cdf_figure(groups: list[Group]) -> Figure | None:
    """One panel per task with both protocols' latency CDFs, one line per target and operation."""
    several_loads = len({g.users for g in groups}) > 1
    panels: dict[str, list[tuple[str, np.ndarray]]] = {}
    for task, dimse, web, _, _ in PROTOCOL_TASKS:
        lines = []
        for group in groups:
            for operation in (*dimse, web):
                latencies = np.concatenate(
                    [requested(m.samples, (operation,))["latency_ms"].to_numpy() for m in group.measurements]
                )
                if len(latencies):
                    label = operation if len(groups) == 1 else f"{group.label(several_loads)}: {operation}"
                    lines.append((label, latencies))
        if any(label.endswith(web) for label, _ in lines):
            panels[f"{task}: {' / '.join(dimse)} vs {web}"] = lines
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
    if figure := _cdf_figure(groups):
        blocks.append(figure)
    return Section(TITLE, blocks)
