"""The hypervisor's view of a run (the hypervisor_* columns of server_metrics.csv, an esxi target's VM as ESXi
saw it): per run, its samples summarised for the report's environment section.

CPU ready above 5% per vCPU is VMware's common rule of thumb for CPU contention (KB 2002181,
"Converting between CPU summation and CPU % ready values"; 10% a problem), and bench.analysis.bounds
names it as what bounded a figure. Storage latency above ~10-15 ms per command is the
comparable advice for a device.
"""

from __future__ import annotations

from typing import TypedDict

import pandas as pd

from bench.analysis.aggregate import load_server_metrics
from bench.analysis.runset import RunData

CPU_READY_CONTENTION = 5.0  # percent per vCPU (VMware KB 2002181)


class HypervisorFigures(TypedDict):
    """One run's hypervisor samples in a few figures (summary.json's `hypervisor`)."""

    target: str
    run: str
    source: str
    synthetic: bool
    samples: int
    cpu_ready_percent_mean: float | None
    cpu_ready_percent_max: float | None
    cpu_costop_percent_mean: float | None
    cpu_usage_percent_mean: float | None
    memory_ballooned_mb_max: float | None
    memory_swapped_mb_max: float | None
    disk_read_latency_ms_mean: float | None
    disk_write_latency_ms_mean: float | None
    net_mb_per_s_mean: float | None


def _stat(frame: pd.DataFrame, column: str, how: str, scale: float = 1.0) -> float | None:
    if column not in frame.columns or not frame[column].notna().any():
        return None
    value = frame[column].max() if how == "max" else frame[column].mean()
    return round(float(value) * scale, 2)


def hypervisor_figures(run: RunData) -> HypervisorFigures | None:
    """The run's hypervisor samples summarised; None when the run has no hypervisor view (not an esxi target)."""
    view = run.run.resources.hypervisor_view if run.run.resources else None
    if view is None:
        return None
    frame, _ = load_server_metrics(run.folder)
    rows = pd.DataFrame()
    if frame is not None and "hypervisor_sample_time" in frame.columns:
        rows = frame[frame["hypervisor_sample_time"].notna()]
    net = None
    if {"hypervisor_net_received_bytes_per_s", "hypervisor_net_transmitted_bytes_per_s"} <= set(rows.columns):
        both = rows["hypervisor_net_received_bytes_per_s"] + rows["hypervisor_net_transmitted_bytes_per_s"]
        net = round(float(both.mean()) / 1e6, 2) if both.notna().any() else None
    return {
        "target": run.target,
        "run": run.folder.name,
        "source": view.source,
        "synthetic": view.synthetic,
        "samples": len(rows),
        "cpu_ready_percent_mean": _stat(rows, "hypervisor_cpu_ready_percent", "mean"),
        "cpu_ready_percent_max": _stat(rows, "hypervisor_cpu_ready_percent", "max"),
        "cpu_costop_percent_mean": _stat(rows, "hypervisor_cpu_costop_percent", "mean"),
        "cpu_usage_percent_mean": _stat(rows, "hypervisor_cpu_usage_percent", "mean"),
        "memory_ballooned_mb_max": _stat(rows, "hypervisor_memory_ballooned_bytes", "max", 1e-6),
        "memory_swapped_mb_max": _stat(rows, "hypervisor_memory_swapped_bytes", "max", 1e-6),
        "disk_read_latency_ms_mean": _stat(rows, "hypervisor_disk_read_latency_ms", "mean"),
        "disk_write_latency_ms_mean": _stat(rows, "hypervisor_disk_write_latency_ms", "mean"),
        "net_mb_per_s_mean": net,
    }
