"""How the report writes numbers, estimates with their intervals, and failure counts in a cell or a sentence."""

from __future__ import annotations


def num(value, digits: int = 1) -> str:
    """A number with thousands separators, or n/a when it was not measured."""
    return "n/a" if value is None else f"{value:,.{digits}f}"


def ceiling_notes(group: dict) -> str:
    """The ingest ceiling's note, the retrieval one when the group retrieved, and the DICOMweb ones when it spoke
    DICOMweb (summaries from before them have none)."""
    retrieval = group.get("retrieve_calibration")
    notes = [group["calibration"]["note"], *([retrieval["note"]] if retrieval else [])]
    return "; ".join(notes + [verdict["note"] for verdict in group.get("dicomweb_calibration") or []])


def with_interval(estimate: dict | None, digits: int = 1) -> str:
    """An estimate and its 95% interval, or why it has none."""
    if not estimate:
        return "n/a"
    if estimate.get("ci_low") is None:
        return f"{num(estimate['value'], digits)} [no interval: too short]"
    return f"{num(estimate['value'], digits)} [{num(estimate['ci_low'], digits)}, {num(estimate['ci_high'], digits)}]"


def failed_beside(failed: dict, operation: str) -> str:
    """' (3 failed)' after a percentile whose requests include failures (counted at their elapsed time)."""
    count = failed.get(operation, 0)
    return f" ({count:,} failed)" if count else ""


def percentile_cell(latency: dict, name: str) -> str:
    return num(latency[name]) + (f" ({latency['failed']:,} failed)" if latency.get("failed") else "")


def ratio_interval_text(row: dict) -> str:
    if row.get("ci_low") is None:
        return "no interval: too short"
    return f"95% CI {row['ci_low']:.2f}-{row['ci_high']:.2f}"


def drain_text(drain: dict) -> str:
    if not drain.get("requests"):
        return "no request answered after the stop signal"
    return f"drain after the stop signal: {drain['requests']} requests over {drain['seconds']:g} s, not measured"
