"""How the archive's memory, open files and threads grew over a long run, per hour, with an interval.

A soak asks whether the archive leaks: does its resident memory, its count of open files or of
threads keep rising while the load stays the same? The per-second series in server_metrics.csv
(bench.runs.resources) answer it. Over the measured windows only (warm-up excluded: caches fill
then), each series is reduced to one median per minute, and the trend is Sen's slope (the median
of the slopes between every pair of minutes: a restart, a burst or a recycled study cannot drag it
the way it drags a least-squares line), from scipy.stats.theilslopes. Its 95% interval comes from
Kendall's S (Sen 1968) with ties corrected (per-minute medians of file and thread counts tie often),
which takes the minutes as independent: a slow wander can still make the interval too narrow, so the
verdict says "grows" only when the whole interval lies above zero and the page gives the span.
Runs shorter than MIN_SPAN_SECONDS get no trend: a per-hour figure from a few minutes claims more
than it knows.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import numpy as np
import pandas as pd
from scipy.stats import theilslopes

from bench.analysis.bounds import measured_rows

MIN_SPAN_SECONDS = 600.0  # ten minutes: at least ten per-minute medians behind a per-hour trend
BUCKET_SECONDS = 60.0

# server_metrics.csv column -> (what it is, unit, scale from the column's unit to the shown one)
GROWTH_SERIES = {
    "server_rss_bytes": ("archive resident memory", "MB", 1e-6),
    "server_open_fds": ("archive open files", "files", 1.0),
    "server_threads": ("archive threads", "threads", 1.0),
    "server_processes": ("archive processes", "processes", 1.0),
}


def minute_medians(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(hours since the first row, median of `column`) per whole minute that has values."""
    values = pd.to_numeric(rows[column], errors="coerce")
    kept = rows.loc[values.notna(), "time"]
    if kept.empty:
        return np.array([]), np.array([])
    minute = ((kept - kept.iloc[0]) // BUCKET_SECONDS).astype(int)
    medians = values[values.notna()].groupby(minute.values).median()
    return medians.index.to_numpy() * BUCKET_SECONDS / 3600.0, medians.to_numpy(dtype=float)


def _verdict(low: float, high: float) -> str:
    if low > 0:
        return "grows"
    if high < 0:
        return "shrinks"
    return "no trend evident"


class SeriesGrowth(TypedDict):
    """One series' growth (series_growth), in the shown unit."""

    what: str
    unit: str
    first_minute: float
    last_minute: float
    per_hour: float
    per_hour_low: float
    per_hour_high: float
    per_hour_percent: float | None
    verdict: str


class GrowthFigures(TypedDict):
    """summary.json's growth of one run: the measured span (None without server metrics) and each series'
    growth, or a note on why it cannot say."""

    seconds: float | None
    series: NotRequired[dict[str, SeriesGrowth]]
    note: NotRequired[str]


def series_growth(rows: pd.DataFrame, column: str) -> SeriesGrowth | None:
    """One series' start, end and growth per hour (shown units), or None when it has too few minutes."""
    hours, medians = minute_medians(rows, column)
    if len(hours) < MIN_SPAN_SECONDS / BUCKET_SECONDS:
        return None
    what, unit, scale = GROWTH_SERIES[column]
    slope, _, low, high = theilslopes(medians, hours, alpha=0.95)
    return {
        "what": what,
        "unit": unit,
        "first_minute": round(medians[0] * scale, 3),
        "last_minute": round(medians[-1] * scale, 3),
        "per_hour": round(slope * scale, 3),
        "per_hour_low": round(low * scale, 3),
        "per_hour_high": round(high * scale, 3),
        # the same against the first minute: 2 MB/h means little for 200 MB, much for 20 MB
        "per_hour_percent": round(100.0 * slope / medians[0], 2) if medians[0] else None,
        "verdict": _verdict(low, high),
    }


def growth(frame: pd.DataFrame | None, begin: float, end: float) -> GrowthFigures:
    """summary.json's growth: {"seconds", "series": {column: figures}} or {"seconds", "note"} when it cannot say."""
    if frame is None:
        return {"seconds": None, "note": "no server metrics recorded"}
    rows = measured_rows(frame, begin, end)
    seconds = round(float(end - begin), 1)
    if seconds < MIN_SPAN_SECONDS:
        return {
            "seconds": seconds,
            "note": f"too short for a trend per hour (under {MIN_SPAN_SECONDS / 60:g} minutes measured)",
        }
    series = {c: g for c in GROWTH_SERIES if c in rows.columns for g in [series_growth(rows, c)] if g}
    if not series:
        return {"seconds": seconds, "note": "no archive process series in server_metrics.csv (a remote target)"}
    return {"seconds": seconds, "series": series}


def _percent_text(figures: SeriesGrowth) -> str:
    percent = figures.get("per_hour_percent")
    return f" ({percent:+.1f}%/h)" if percent else ""


def growth_text(figures: GrowthFigures) -> str:
    """One line: '+12.3 MB/h (95%: 8.1 to 16.0), grows' per series, or the note."""
    series, seconds = figures.get("series"), figures["seconds"]
    if series is None or seconds is None:  # growth() gives series only with the span measured
        return figures.get("note", "")
    parts = [
        f"{g['what']} {g['per_hour']:+g} {g['unit']}/h{_percent_text(g)} (95%: {g['per_hour_low']:+g} to "
        f"{g['per_hour_high']:+g}): {g['verdict']}"
        for g in series.values()
    ]
    return f"over {seconds / 60:.0f} min: " + "; ".join(parts)
