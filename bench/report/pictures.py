"""The figures section: which figures a report shows, drawn by bench.report.figures from the runs' samples
and server metrics, and their captions (what each shows, what bounded it)."""

from __future__ import annotations

import numpy as np

from bench.analysis.aggregate import Settings, load_server_metrics, requested, timeline
from bench.analysis.compare import Group
from bench.analysis.runset import RunData
from bench.report import figures
from bench.report.faults import fault_marks
from bench.report.model import Figure, Note, Section

CDF_OPERATIONS = ("C-STORE", "C-FIND", "C-MOVE", "C-GET")


def _run_label(run: RunData) -> str:
    return f"{run.target} u{run.users} r{run.repetition}"


def _run_lines(groups: list[Group]) -> list[tuple[str, RunData, object]]:
    several = len(groups) > 1
    return [(_run_label(r) if several else r.folder.name, r, m) for g in groups for r, m in zip(g.runs, g.measurements)]


def _timeline_figures(groups: list[Group], window: float, ceiling: float | None, bound_note: str) -> list[Figure]:
    lines = [(label, timeline(r.samples, window), m.begin - m.run_start) for label, r, m in _run_lines(groups)]
    marks = fault_marks(groups)
    fault_note = " Dashed black lines: faults injected (see the fault table)." if marks else ""
    out = [
        Figure(
            figures.timeline_png(lines, "instances", "instances/s stored", ceiling, marks),
            "throughput timeline",
            f"Acknowledged C-STORE instances/s per {window:g} s window. {bound_note}{fault_note}",
        )
    ]
    if any(float(b["retrieve_instances"].sum()) > 0 for _, b, _ in lines):
        out.append(
            Figure(
                figures.timeline_png(lines, "retrieve_instances", "instances/s retrieved"),
                "retrieve timeline",
                f"Instances/s retrieved (C-MOVE/C-GET) per {window:g} s window.",
            )
        )
    return out


def _latency_figures(groups: list[Group]) -> list[Figure]:
    several_loads = len({g.users for g in groups}) > 1
    cdf = {}
    for op in CDF_OPERATIONS:
        series = [
            (
                g.label(several_loads),
                np.concatenate([requested(m.samples, (op,))["latency_ms"].to_numpy() for m in g.measurements]),
            )
            for g in groups
        ]
        if any(len(latencies) for _, latencies in series):
            cdf[op] = [(label, latencies) for label, latencies in series if len(latencies)]
    if not cdf:
        return []
    return [
        Figure(
            figures.latency_cdf_png(cdf),
            "latency CDFs",
            "Share of requests answered within a given latency, after the warm-up (failed requests and "
            "timeouts at their elapsed time).",
        )
    ]


def _scaling_figures(data: dict, ceiling: float | None, bound_note: str) -> list[Figure]:
    curves = {}
    for g in data["groups"]:
        if "ingest_instances_per_s" in g["estimates"]:
            curves.setdefault(g["target"], []).append((g["users"], g["estimates"]["ingest_instances_per_s"]))
    if not any(len(points) > 1 for points in curves.values()):
        return []
    return [
        Figure(
            figures.scaling_png(curves, "instances/s stored", ceiling),
            "scaling curve",
            f"Stored instances/s against concurrent users, 95% intervals. {bound_note}",
        )
    ]


def _server_figures(groups: list[Group]) -> list[Figure]:
    recorded = [
        (label, frame, m.run_start)
        for label, r, m in _run_lines(groups)
        for frame, _ in [load_server_metrics(r.folder)]
        if frame is not None
    ]
    if not recorded:
        return []
    out = []
    if any(figures.RESOURCE_COLUMNS & set(frame.columns) for _, frame, _ in recorded):
        out.append(
            Figure(
                figures.resources_png(recorded),
                "resource timelines",
                "CPU, disk and network per second from server_metrics.csv (pacsbench's sampler): what bounded "
                "the figures above.",
            )
        )
    others = [
        (label, frame.drop(columns=list(figures.RESOURCE_COLUMNS & set(frame.columns))), t0)
        for label, frame, t0 in recorded
    ]
    if any(len(frame.columns) > 1 for _, frame, _ in others):
        out.append(
            Figure(
                figures.server_metrics_png([o for o in others if len(o[1].columns) > 1]),
                "server metrics",
                "Server CPU, memory and disk as recorded in server_metrics.csv (runs without the file are left out).",
            )
        )
    return out


def _figures(data: dict, groups: list[Group], settings: Settings) -> list[Figure]:
    """Ratios, timelines, resources, latency CDFs and scaling: each when the runs have what it needs."""
    ceiling = min(
        (
            g["calibration"]["ceiling_instances_per_s"]
            for g in data["groups"]
            if g["calibration"].get("ceiling_instances_per_s")
        ),
        default=None,
    )
    bound_note = "; ".join(f"{g['label']}: {g['calibration']['note']}" for g in data["groups"])
    out = []
    if data["ratios"]:
        out.append(
            Figure(
                figures.ratio_png(data["ratios"], data["baseline_target"]),
                "ratios to the baseline",
                f"Each target against {data['baseline_target']} at the same load; bars: 95% bootstrap intervals "
                f"over repetitions and {settings.window_seconds:g} s windows. {bound_note}",
            )
        )
    out += _timeline_figures(groups, settings.window_seconds, ceiling, bound_note)
    out += _server_figures(groups)  # beside the throughput timeline: what bounded it
    out += _latency_figures(groups)
    return out + _scaling_figures(data, ceiling, bound_note)


def _server_metrics_notes(groups: list[Group]) -> list[str]:
    return [
        f"{r.folder.name}: {note}"
        for g in groups
        for r in g.runs
        for _, note in [load_server_metrics(r.folder)]
        if note
    ]


def figures_section(data: dict, groups: list[Group], settings: Settings) -> Section:
    """The figures, and which runs had no server metrics to draw."""
    blocks: list = _figures(data, groups, settings)
    if notes := _server_metrics_notes(groups):
        blocks.append(Note("Server metrics: " + "; ".join(notes)))
    return Section("Figures", blocks)
