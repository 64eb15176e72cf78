"""The environment and method sections: where each run ran, and how the figures were computed."""

from __future__ import annotations

from bench.report.model import Bullets, Section, Table

_ENV_HEADERS = [
    "target",
    "run",
    "rep",
    "hypervisor",
    "vCPUs",
    "memory",
    "budget",
    "disk",
    "network",
    "fsync",
    "max PDU",
    "server",
    "load host",
]


def _environment_rows(data: dict) -> list[list[str]]:
    return [
        [
            e["target"],
            e["run"],
            str(e["repetition"]),
            e["hypervisor"],
            e["vcpus"],
            e["memory"],
            e["budget"],
            e["disk"],
            e["network"],
            e["fsync"],
            e["max_pdu"],
            e["server"],
            e["host"],
        ]
        for e in data["environment"]
    ]


def _method_items(data: dict) -> list[str]:
    s = data["settings"]
    return [
        f"Warm-up: {s['warmup']} (rule {s['warmup_rule']}; change with --warmup).",
        f"Windows: {s['window_seconds']:g} s of response time; a request counts in the window its response "
        "arrived in. Figures with intervals are the mean over repetitions of the mean over full windows.",
        f"Intervals: {s['bootstrap']}.",
        "Throughput counts acknowledged requests only (DICOM status success or warning, such as B000 "
        "coercion: the instance was stored, and warnings are counted beside); MB = 10^6 bytes.",
        "Latency percentiles are over every request, failed ones and timeouts at their elapsed time; the "
        "failed count stands beside each.",
        "The measured span ends at the last response before the stop signal; requests answered after it "
        "(the drain) are counted, not measured.",
        "Client-bound: a figure above 80% of the harness ceiling recorded by calibration (run.json "
        "'calibration') may measure the load generator rather than the archive.",
    ]


def environment_section(data: dict) -> Section:
    """One row per run: hypervisor, budget, disk, network, archive settings, load host."""
    return Section("Environment", [Table(_ENV_HEADERS, _environment_rows(data), wide=True)])


def method_section(data: dict) -> Section:
    return Section("How the figures were computed", [Bullets(_method_items(data))])
