"""The modalities family: figures per study modality (instances/s, frames/s, MB/s per operation) and per study
(time to receive, to be queryable, to be moved back), for runs whose samples name their studies' modality."""

from __future__ import annotations

from bench.analysis.compare import Group
from bench.report.model import Block, Note, Part, Section, Table
from bench.report.text import num

OPERATIONS = ("C-STORE", "C-MOVE", "C-GET", "QUERYABLE")
_MODALITY_HEADERS = ["modality", "operation", "requests", "failed", "instances/s", "frames/s", "MB/s", "p95 ms"]
_STUDY_HEADERS = [
    "modality",
    "studies",
    "instances per study",
    "receive s (median)",
    "receive s (longest)",
    "queryable s (median)",
    "queryable s (longest)",
]
_LARGEST_HEADERS = [
    "study",
    "modality",
    "instances",
    "MB",
    "receive s",
    "instances/s",
    "queryable s",
    "moved back s",
    "moved instances/s",
]


def _modality_rows(summary: dict) -> list[list[str]]:
    rows = []
    for modality, operations in summary.get("modalities", {}).items():
        for operation in OPERATIONS:
            figures = operations.get(operation)
            if not figures:
                continue
            rates = operation != "QUERYABLE"  # a QUERYABLE sample carries a time, not instances
            rows.append(
                [
                    modality,
                    operation,
                    f"{figures['requests']:,}",
                    f"{figures['failed']:,}",
                    num(figures["instances_per_s"], 2) if rates else "",
                    num(figures["frames_per_s"], 1) if rates else "",
                    num(figures["mb_per_s"], 2) if rates else "",
                    num(figures["latency_ms"]["p95"]),
                ]
            )
    return rows


def _study_rows(summary: dict) -> list[list[str]]:
    return [
        [
            modality,
            f"{s['studies']:,}",
            num(s["instances_per_study"], 0),
            num(s["receive_seconds_p50"]),
            num(s["receive_seconds_max"]),
            num(s["queryable_seconds_p50"]),
            num(s["queryable_seconds_max"]),
        ]
        for modality, s in summary.get("studies_by_modality", {}).items()
    ]


def _largest_rows(summary: dict) -> list[list[str]]:
    return [
        [
            s["study_instance_uid"][-12:],
            s["modality"],
            f"{s['instances']:,}",
            num(s["bytes"] / 1e6),
            num(s["receive_seconds"]),
            num(s["instances_per_s"]),
            num(s["queryable_seconds"], 2),
            num(s["retrieve_seconds"]),
            num(s["retrieve_instances_per_s"]),
        ]
        for s in summary.get("studies", [])[:5]
    ]


def _run_blocks(summary: dict) -> list[Block]:
    blocks: list[Block] = [
        Table(
            _MODALITY_HEADERS,
            _modality_rows(summary),
            "Per study modality, over the measured window (a PET-CT study counts under CT\\PT).",
            wide=True,
        )
    ]
    if summary.get("studies_by_modality"):
        blocks.append(
            Table(
                _STUDY_HEADERS,
                _study_rows(summary),
                "Per study, over the whole run: time to receive (first C-STORE sent to last acknowledged) and, "
                "where the modality checked it, to be queryable (last C-STORE to the C-FIND counting every instance).",
                wide=True,
            )
        )
        blocks.append(Table(_LARGEST_HEADERS, _largest_rows(summary), "The largest studies.", wide=True))
    return blocks


def modalities_section(groups: list[Group]) -> Section | None:
    """Per-modality and per-study figures of each run; None when no sample names a modality (DSA-only runs
    before the column, or no study sent)."""
    runs = [
        (run, summary)
        for group in groups
        for run, summary in zip(group.runs, group.summaries)
        if summary.get("modalities")
    ]
    if not runs:
        return None
    if len(runs) == 1:
        return Section("Modalities and studies", _run_blocks(runs[0][1]))
    parts: list[Block] = [Note("Each run's figures per modality and per study.")]
    parts += [Part(f"{run.target}: {run.folder.name}", _run_blocks(summary)) for run, summary in runs]
    return Section("Modalities and studies", parts)
