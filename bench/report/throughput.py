"""The throughput and latency tables: one run's headline figures, each target's estimates with their 95%
intervals, its retrieve and query figures, and each target's ratios to the baseline."""

from __future__ import annotations

from bench.analysis.aggregate import METRICS
from bench.analysis.bounds import verdict_text
from bench.analysis.compare import budget_text
from bench.analysis.growth import growth_text
from bench.report.model import Section, Table
from bench.report.text import ceiling_notes, drain_text, failed_beside, num, with_interval

_GROUP_HEADERS = [
    "target",
    "users",
    "runs",
    "instances/s [95% CI]",
    "frames/s",
    "MB/s",
    "C-STORE p95 ms",
    "harness ceiling",
    "bounded by",
]


def _group_rows(data: dict) -> list[list[str]]:
    rows = []
    for g in data["groups"]:
        e = g["estimates"]
        rows.append(
            [
                g["label"],
                str(g["users"]),
                str(g["repetitions"]),
                with_interval(e.get("ingest_instances_per_s"), 2),
                with_interval(e.get("ingest_frames_per_s")),
                with_interval(e.get("ingest_mb_per_s")),
                with_interval(e.get("c_store_p95_ms")) + failed_beside(g.get("failed_by_operation", {}), "C-STORE"),
                ceiling_notes(g),
                verdict_text(g["bound_by"]),
            ]
        )
    return rows


def _optional_metric_rows(data: dict) -> list[list[str]]:
    """Retrieve and query figures, for the groups that measured them."""
    names = [
        "retrieve_instances_per_s",
        "retrieve_mb_per_s",
        "query_requests_per_s",
        "c_find_p95_ms",
        "c_move_p95_ms",
        "c_get_p95_ms",
    ]
    return [
        [g["label"], METRICS[n].label, with_interval(g["estimates"][n], 2)]
        for g in data["groups"]
        for n in names
        if n in g["estimates"]
    ]


_RATIO_HEADERS = ["target", "users", "figure", "ratio to baseline [95% CI]", "reading", "runs (baseline runs)"]


def _ratio_rows(data: dict) -> list[list[str]]:
    return [
        [
            r["target"],
            str(r["users"]),
            r["label"],
            with_interval(r, 3),
            r["reading"],
            f"{r['repetitions']} ({r['baseline_repetitions']})",
        ]
        for r in data["ratios"]
    ]


def target_sections(data: dict) -> list[Section]:
    """Each target's figures, and its ratios to the baseline when the report compares targets."""
    blocks: list = [Table(_GROUP_HEADERS, _group_rows(data))]
    if optional := _optional_metric_rows(data):
        blocks.append(Table(["target", "figure", "value [95% CI]"], optional))
    sections = [Section("Figures per target", blocks)]
    if data["ratios"]:
        ratios = Table(_RATIO_HEADERS, _ratio_rows(data))
        sections.append(Section(f"Against the baseline ({data['baseline_target']})", [ratios]))
    return sections


def headline_section(s: dict, data: dict, integrity: str) -> Section:
    """One run's figures over its measured span (the estimates with intervals are in the target table)."""
    return Section(
        "The run in figures", [Table(["metric", "value"], _headline_rows(s, data) + [["integrity", integrity]])]
    )


def _headline_rows(s: dict, data: dict) -> list[list[str]]:
    lat = s["latency_ms"]
    return [
        ["instances/s", num(s["instances_per_s"], 2)],
        ["frames/s", num(s["frames_per_s"])],
        ["MB/s", num(s["mb_per_s"])],
        [
            "C-STORE latency p50 / p90 / p95 / p99 / max (ms), every request",
            " / ".join(num(lat[p]) for p in ("p50", "p90", "p95", "p99", "max"))
            + f" ({lat.get('failed', 0):,} of {lat.get('requests', 0):,} failed)",
        ],
        ["warning statuses (stored, counted above)", f"{s.get('warnings', 0):,}"],
        ["drain (not measured)", drain_text(s.get("drain") or {})],
        ["acknowledged instances", f"{s['instances']:,}"],
        ["failed requests", f"{s['failures']:,}"],
        ["users / associations", f"{s['users']} / {s['associations']}"],
        ["measured window (s)", f"{num(s['window_seconds'], 2)} after {num(s['warmup_seconds'], 2)} s warm-up"],
        ["harness ceiling", ceiling_notes(data["groups"][0])],
        ["budget", budget_text(data["groups"][0]["budget"])],
        ["bounded by", verdict_text(data["groups"][0]["bound_by"])],
        ["resource growth", growth_text(data["groups"][0]["growth"][0])],
    ]
