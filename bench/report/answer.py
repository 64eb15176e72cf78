"""The answer at the top of a report: the headline figures or ratios, what bounded them, unequal budgets."""

from __future__ import annotations

from bench.analysis.bounds import verdict_text
from bench.report.text import ratio_interval_text, with_interval


def answer(data: dict) -> str:
    """The one-paragraph answer at the top of the page: the figures, what bounded them, unequal budgets."""
    bounds = " ".join(
        f"{g['label']}{f' ({on})' if (on := g.get('runs_on')) else ''} bounded by {verdict_text(g['bound_by'])}."
        for g in data["groups"]
    )
    budgets = f" {data['budgets_note'][0].upper()}{data['budgets_note'][1:]}." if data.get("budgets_note") else ""
    evidence = " " + " ".join(f"{note}." for note in data.get("evidence_notes", []))  # labels keep their case
    return f"{_figures_answer(data)} {bounds}{budgets}{evidence.rstrip()}"


def _figures_answer(data: dict) -> str:
    if not data["ratios"]:
        g = data["groups"][0]
        e = g["estimates"]
        return (
            f"{g['label']}: {with_interval(e.get('ingest_instances_per_s'), 2)} instances/s, "
            f"{with_interval(e.get('ingest_frames_per_s'))} frames/s, {with_interval(e.get('ingest_mb_per_s'))} "
            f"MB/s stored (95% bootstrap intervals); {g['calibration']['note']}."
        )
    parts = [
        f"{r['target']} ({r['users']} users) reaches {r['value']:.2f}x of {data['baseline_target']}'s "
        f"{r['label']} ({ratio_interval_text(r)}: {r['reading']})"
        for r in data["ratios"]
        if r["metric"] in ("ingest_instances_per_s", "retrieve_instances_per_s")
    ]
    return "; ".join(parts) + "." if parts else "No figure is shared by a target and the baseline."
