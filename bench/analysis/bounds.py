"""What bounded a run's figures: server-cpu, disk, network, client or none-evident, from server_metrics.csv.

The verdict reads the per-second resource series (bench.runs.resources writes them) over the
measured windows only, and applies stated thresholds to their means:

- server-cpu: the archive's processes used >= 85% of its CPU budget, or the CPUs it may run on
  were >= 90% busy whoever used them (shared with other processes: it could not get more), or a
  guest (or remote archive) saw its own CPUs >= 85% busy or stolen (its /metrics, guest_* columns);
- hypervisor CPU contention: the hypervisor kept the archive's VM waiting for a physical CPU, its CPU
  ready >= 5% per vCPU (hypervisor_* columns, an esxi target; VMware's rule of thumb, KB 2002181,
  bench.analysis.hypervisor): the VM could not get the CPUs it was given;
- disk: the device holding the data was busy >= 85% of the time;
- network: the interface towards the target carried >= 85% of its link speed (loopback has none);
- client: one load process used >= 90% of a core, or calibration says CLIENT-BOUND.

When several hold, the first in that order is the verdict and the others are listed under
`also`: a saturated archive bounds the figure even when the load generator is busy too.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import numpy as np
import pandas as pd

from bench.analysis.hypervisor import CPU_READY_CONTENTION

SERVER_CPU_SHARE = 85.0
SHARED_CPUS_BUSY = 90.0
DISK_BUSY = 85.0
NETWORK_SHARE = 85.0
CLIENT_CORE = 90.0
LIMITS = ("server-cpu", "hypervisor CPU contention", "disk", "network", "client")


class BoundBy(TypedDict):
    """What bounded a run's figures (bound_by): the limit, the figure that says so, the other limits reached,
    and the resource series' means over the measured windows (absent when nothing was measured)."""

    limit: str
    evidence: str
    also: list[str]
    means: NotRequired[dict[str, float]]


NOT_MEASURED: BoundBy = {"limit": "not-measured", "evidence": "no server metrics recorded", "also": []}


def measured_rows(frame: pd.DataFrame, begin: float, end: float) -> pd.DataFrame:
    """The rows whose second lies inside [begin, end] (a row at `time` covers the second before it);
    the rows that overlap it when the window is shorter than a row."""
    inside = frame[(frame["time"] - 1 >= begin - 1e-6) & (frame["time"] <= end + 1e-6)]
    return inside if len(inside) else frame[(frame["time"] > begin) & (frame["time"] - 1 < end)]


def _means(rows: pd.DataFrame) -> dict[str, float]:
    numeric = rows.drop(columns=["time"], errors="ignore").apply(pd.to_numeric, errors="coerce")
    return {c: float(v) for c, v in numeric.mean().items() if not np.isnan(v)}


def _cpus_text(cpus: float | None) -> str:
    return "its budget" if not cpus else f"{cpus:g} CPU" + ("" if cpus == 1 else "s")


def _findings(m: dict[str, float], cpus: float | None, calibration_client_bound: bool | None) -> dict[str, str]:
    """Each limit whose threshold the means reach, with the figure that reached it."""
    found: dict[str, str] = {}
    share, busy = m.get("server_cpu_budget_percent"), m.get("server_cpus_busy_percent")
    if share is not None and share >= SERVER_CPU_SHARE:
        found["server-cpu"] = f"archive CPU {share:.0f}% of {_cpus_text(cpus)}"
    elif share is not None and busy is not None and busy >= SHARED_CPUS_BUSY:
        found["server-cpu"] = (
            f"archive CPU {share:.0f}% of {_cpus_text(cpus)} while its CPUs were {busy:.0f}% "
            "busy (shared with other processes)"
        )
    guest, steal = m.get("guest_cpu_percent"), m.get("guest_steal_percent", 0.0)
    if "server-cpu" not in found and guest is not None and guest + steal >= SERVER_CPU_SHARE:
        found["server-cpu"] = (
            f"the archive's machine saw its CPUs {guest:.0f}% busy"
            + (f" and {steal:.0f}% stolen by its hypervisor" if steal >= 1 else "")
            + " (its own /metrics)"
        )
    ready = m.get("hypervisor_cpu_ready_percent")
    if ready is not None and ready >= CPU_READY_CONTENTION:
        found["hypervisor CPU contention"] = (
            f"CPU ready {ready:.1f}% per vCPU (ESXi's own counters; VMware's rule of thumb: "
            f"contention from {CPU_READY_CONTENTION:g}%)"
        )
    if m.get("disk_busy_percent", 0) >= DISK_BUSY:
        found["disk"] = f"data disk busy {m['disk_busy_percent']:.0f}% of the time"
    link = m.get("net_link_bytes_per_s", 0)
    carried = m.get("net_sent_bytes_per_s", 0) + m.get("net_recv_bytes_per_s", 0)
    if link > 0 and carried >= NETWORK_SHARE / 100 * link:
        found["network"] = f"network {carried / 1e6:.0f} MB/s of a {link / 1e6:.0f} MB/s link"
    if m.get("load_busiest_cpu_percent", 0) >= CLIENT_CORE:
        found["client"] = f"a load process at {m['load_busiest_cpu_percent']:.0f}% of a core"
    elif calibration_client_bound:
        found["client"] = "throughput above 80% of the calibrated harness ceiling"
    return found


def _overview(m: dict[str, float], cpus: float | None) -> str:
    """The deciding figures in one line, for a run where no threshold was reached."""
    parts = []
    if "server_cpu_budget_percent" in m:
        parts.append(f"archive CPU {m['server_cpu_budget_percent']:.0f}% of {_cpus_text(cpus)}")
    if "guest_cpu_percent" in m:
        parts.append(
            f"guest's own CPU {m['guest_cpu_percent']:.0f}% busy, {m.get('guest_steal_percent', 0):.0f}% stolen"
        )
    if "hypervisor_cpu_ready_percent" in m:
        parts.append(f"CPU ready {m['hypervisor_cpu_ready_percent']:.1f}% per vCPU")
    if "disk_busy_percent" in m:
        parts.append(f"disk {m['disk_busy_percent']:.0f}% busy")
    if "load_busiest_cpu_percent" in m:
        parts.append(f"busiest load process {m['load_busiest_cpu_percent']:.0f}% of a core")
    return ", ".join(parts) or "no resource figure recorded"


def bound_by(
    rows: pd.DataFrame | None, cpus: float | None = None, calibration_client_bound: bool | None = None
) -> BoundBy:
    """The verdict for measured rows of server_metrics.csv: {"limit", "evidence", "also", "means"}."""
    if rows is None or rows.empty:
        if calibration_client_bound:
            return {
                "limit": "client",
                "evidence": "throughput above 80% of the calibrated harness ceiling",
                "also": [],
                "means": {},
            }
        return NOT_MEASURED.copy()
    m = _means(rows)
    found = _findings(m, cpus, calibration_client_bound)
    means = {k: round(v, 1) for k, v in m.items()}
    if not found:
        return {"limit": "none-evident", "evidence": _overview(m, cpus), "also": [], "means": means}
    limit = next(name for name in LIMITS if name in found)
    return {
        "limit": limit,
        "evidence": found[limit],
        "also": [f"{k}: {found[k]}" for k in found if k != limit],
        "means": means,
    }


def verdict_text(verdict: BoundBy) -> str:
    """'server-cpu (archive CPU 97% of 2 CPUs)' for headlines."""
    text = f"{verdict['limit']} ({verdict['evidence']})"
    return text + (f"; also {'; '.join(verdict['also'])}" if verdict.get("also") else "")
