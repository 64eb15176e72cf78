"""Figures for the reports, as PNG bytes (the HTML inlines them as base64: it opens offline).

Text that came from users or DICOM goes through `_plain`: matplotlib would otherwise read
`$...$` as mathtext (and fail on some input).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from bench.analysis.compare import CLIENT_BOUND_SHARE  # noqa: E402
from bench.results.server_metrics import COLUMNS as SERVER_METRICS_COLUMNS  # noqa: E402


def _plain(text: str) -> str:
    return str(text).replace("$", r"\$")


def _png(fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _ceiling_lines(axes, ceiling: float | None) -> None:
    if ceiling:
        axes.axhline(ceiling, color="tab:red", linestyle="--", linewidth=1, label="harness ceiling")
        axes.axhline(
            CLIENT_BOUND_SHARE * ceiling,
            color="tab:red",
            linestyle=":",
            linewidth=1,
            label="80% of ceiling (client-bound above)",
        )


def _fault_marks(axes, marks: list[tuple[float, str]]) -> None:
    """A dashed vertical line at each fault, its action written at the top."""
    for seconds, text in marks:
        axes.axvline(seconds, color="black", linestyle="--", linewidth=1)
        axes.annotate(
            _plain(text),
            (seconds, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize="small",
        )


def timeline_png(
    series: list[tuple[str, pd.DataFrame, float]],
    column: str,
    unit: str,
    ceiling: float | None = None,
    marks: list[tuple[float, str]] = (),
) -> bytes:
    """Throughput per window over time, one line per run; the warm-up of each run marked, and `marks` (faults)."""
    fig, axes = plt.subplots(figsize=(9, 3.6))
    for label, bins, warmup_seconds in series:
        (line,) = axes.step(bins["seconds"], bins[column], where="post", label=_plain(label))
        axes.axvline(warmup_seconds, color=line.get_color(), alpha=0.4, linewidth=1)
    _ceiling_lines(axes, ceiling)
    _fault_marks(axes, marks)
    axes.set_xlabel("seconds since the first request (thin vertical lines: end of warm-up)")
    axes.set_ylabel(unit)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    return _png(fig)


def latency_cdf_png(series: dict[str, list[tuple[str, np.ndarray]]]) -> bytes:
    """Empirical CDF of latency, one panel per operation, one line per group."""
    operations = list(series)
    fig, panels = plt.subplots(1, len(operations), figsize=(4.5 * len(operations), 3.6), squeeze=False)
    for axes, operation in zip(panels[0], operations):
        for label, latencies in series[operation]:
            ordered = np.sort(latencies)
            axes.step(ordered, np.arange(1, len(ordered) + 1) / len(ordered), where="post", label=_plain(label))
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel(f"{operation} latency (ms, log scale)")
        axes.set_ylabel("share of requests at or below")
        axes.set_ylim(0, 1.01)
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize="small", loc="lower right")
    return _png(fig)


def _error_bars(estimates: list[dict]) -> np.ndarray:
    """Lengths below and above each value; none for a figure too short for an interval."""

    def bounds(e: dict) -> tuple[float, float]:
        low, high = e.get("ci_low"), e.get("ci_high")
        return (e["value"] if low is None else low), (e["value"] if high is None else high)

    pairs = [bounds(e) for e in estimates]
    values = np.array([e["value"] for e in estimates])
    errors = np.array([values - [low for low, _ in pairs], [high for _, high in pairs] - values])
    return np.clip(errors, 0, None)


def ratio_png(rows: list[dict], baseline: str) -> bytes:
    """Each target's figure as a ratio to the baseline, with its 95% interval."""
    fig, axes = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    labels = [_plain(f"{r['target']} ({r['users']} users): {r['label']}") for r in rows]
    y = np.arange(len(rows))[::-1]
    values = np.array([r["value"] for r in rows])
    axes.errorbar(values, y, xerr=_error_bars(rows), fmt="o", capsize=4, color="tab:blue")
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_yticks(y, labels, fontsize="small")
    axes.set_xlabel(_plain(f"ratio to {baseline} (1 = same; 95% bootstrap interval)"))
    axes.grid(alpha=0.3, axis="x")
    return _png(fig)


def scaling_png(curves: dict[str, list[tuple[int, dict]]], unit: str, ceiling: float | None = None) -> bytes:
    """Throughput against concurrent users (associations), one line per target, with intervals."""
    fig, axes = plt.subplots(figsize=(9, 3.6))
    for target, points in curves.items():
        points = sorted(points)
        users = [u for u, _ in points]
        values = np.array([e["value"] for _, e in points])
        axes.errorbar(
            users, values, yerr=_error_bars([e for _, e in points]), marker="o", capsize=4, label=_plain(target)
        )
    _ceiling_lines(axes, ceiling)
    axes.set_xlabel("concurrent users (one association each)")
    axes.set_ylabel(unit)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _png(fig)


def server_metrics_png(series: list[tuple[str, pd.DataFrame, float]]) -> bytes:
    """Each recorded server metric over time, one panel per metric, one line per run."""
    columns = sorted({c for _, frame, _ in series for c in frame.columns if c != "time"})
    fig, panels = plt.subplots(len(columns), 1, figsize=(9, 2.4 * len(columns)), squeeze=False, sharex=True)
    for axes, column in zip(panels[:, 0], columns):
        for label, frame, t0 in series:
            if column in frame.columns:
                axes.plot(frame["time"] - t0, frame[column], label=_plain(label))
        axes.set_ylabel(_plain(column), fontsize="small")
        axes.grid(alpha=0.3)
    panels[-1, 0].set_xlabel("seconds since the first request")
    panels[0, 0].legend(fontsize="small")
    return _png(fig)


# Panels of the resource timelines: (title, unit, [(column, legend, scale)]) from server_metrics.csv.
RESOURCE_PANELS = (
    (
        "CPU",
        "%",
        [
            ("server_cpu_budget_percent", "archive, % of its budget", 1.0),
            ("load_busiest_cpu_percent", "busiest load process, % of a core", 1.0),
            ("host_steal_percent", "host steal", 1.0),
            ("host_iowait_percent", "host iowait", 1.0),
        ],
    ),
    (
        "disk",
        "MB/s, % busy",
        [
            ("disk_write_bytes_per_s", "written MB/s", 1e-6),
            ("disk_read_bytes_per_s", "read MB/s", 1e-6),
            ("disk_busy_percent", "busy %", 1.0),
        ],
    ),
    ("network", "MB/s", [("net_recv_bytes_per_s", "received", 1e-6), ("net_sent_bytes_per_s", "sent", 1e-6)]),
    (
        "memory",
        "MB",
        [
            ("server_rss_bytes", "archive resident", 1e-6),
            ("hypervisor_ram_used_mib", "VM resident (hypervisor)", 1.048576),
        ],
    ),
    # The VM as its hypervisor sees it (virtualbox: VBoxManage metrics of the VM process).
    (
        "hypervisor CPU",
        "% of the host",
        [("hypervisor_cpu_user_pct", "VM user", 1.0), ("hypervisor_cpu_kernel_pct", "VM kernel", 1.0)],
    ),
)
RESOURCE_COLUMNS = set(SERVER_METRICS_COLUMNS) - {"time"}  # the rest get a panel each (server_metrics_png)


def resources_png(series: list[tuple[str, pd.DataFrame, float]]) -> bytes:
    """CPU, disk and network over time (same axis as the throughput timeline), one line per run and resource."""
    panels = [
        (title, unit, lines)
        for title, unit, lines in RESOURCE_PANELS
        if any(c in frame.columns and frame[c].notna().any() for _, frame, _ in series for c, _, _ in lines)
    ]
    fig, axes_list = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), squeeze=False, sharex=True)
    several = len(series) > 1
    for axes, (title, unit, lines) in zip(axes_list[:, 0], panels):
        for label, frame, t0 in series:
            for column, legend, scale in lines:
                if column in frame.columns and frame[column].notna().any():
                    name = f"{label}: {legend}" if several else legend
                    axes.plot(frame["time"] - t0, frame[column] * scale, label=_plain(name))
        axes.set_ylabel(_plain(f"{title} ({unit})"), fontsize="small")
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small", loc="upper right")
    axes_list[-1, 0].set_xlabel("seconds since the first request (the row at t covers the second before it)")
    return _png(fig)
