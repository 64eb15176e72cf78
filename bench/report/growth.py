"""The resource-growth section: how open files, threads and memory trended over each run's measured span."""

from __future__ import annotations

from bench.analysis.growth import MIN_SPAN_SECONDS
from bench.report.model import Note, Section, Table
from bench.report.text import num

_GROWTH_HEADERS = ["target", "run", "series", "first minute", "last minute", "growth per hour [95% CI]", "verdict"]
_GROWTH_NOTE = (
    f"Growth over the measured span (warm-up excluded): Sen's slope of per-minute medians of the "
    f"per-second series, its 95% interval from Kendall's S (which takes minutes as independent); "
    f"'grows' only when the whole interval is above zero. Runs under {MIN_SPAN_SECONDS / 60:g} "
    "minutes get no trend."
)


def _growth_rows(data: dict) -> list[list[str]]:
    rows = []
    for group in data["groups"]:
        for run in group.get("growth", []):
            for g in (run.get("series") or {}).values():
                rows.append(
                    [
                        group["label"],
                        run["run"],
                        f"{g['what']} ({g['unit']})",
                        num(g["first_minute"]),
                        num(g["last_minute"]),
                        f"{g['per_hour']:+.1f} [{g['per_hour_low']:+.1f}, {g['per_hour_high']:+.1f}]"
                        + (f" ({g['per_hour_percent']:+.1f}%)" if g.get("per_hour_percent") else ""),
                        g["verdict"],
                    ]
                )
    return rows


def growth_section(data: dict) -> Section | None:
    """The growth table, for runs with server metrics long enough for a trend."""
    rows = _growth_rows(data)
    return Section("Resource growth", [Table(_GROWTH_HEADERS, rows), Note(_GROWTH_NOTE)]) if rows else None
