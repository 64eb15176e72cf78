"""The environment and method sections: where each run ran (and, for a VM on ESXi, what the hypervisor saw of it),
and how the figures were computed."""

from __future__ import annotations

from bench.analysis.hypervisor import CPU_READY_CONTENTION
from bench.report.model import Block, Bullets, Note, Section, Table

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


_HYPERVISOR_HEADERS = [
    "target",
    "run",
    "samples (20 s)",
    "CPU ready % per vCPU (mean, max)",
    "co-stop % per vCPU",
    "CPU usage %",
    "ballooned MB (max)",
    "swapped MB (max)",
    "disk read / write latency ms",
    "network MB/s",
]


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _hypervisor_rows(figures: list[dict]) -> list[list[str]]:
    return [
        [
            f["target"] + (" (synthetic)" if f["synthetic"] else ""),
            f["run"],
            str(f["samples"]),
            f"{_number(f['cpu_ready_percent_mean'])}, {_number(f['cpu_ready_percent_max'])}",
            _number(f["cpu_costop_percent_mean"]),
            _number(f["cpu_usage_percent_mean"]),
            _number(f["memory_ballooned_mb_max"]),
            _number(f["memory_swapped_mb_max"]),
            f"{_number(f['disk_read_latency_ms_mean'])} / {_number(f['disk_write_latency_ms_mean'])}",
            _number(f["net_mb_per_s_mean"]),
        ]
        for f in figures
    ]


def hypervisor_blocks(data: dict) -> list[Block]:
    """The hypervisor's own view of each VM (esxi targets), with what its figures mean; none without such runs."""
    figures = data.get("hypervisor") or []
    if not figures:
        return []
    blocks: list[Block] = [
        Table(
            _HYPERVISOR_HEADERS,
            _hypervisor_rows(figures),
            caption="The hypervisor's view of the archive's VM: ESXi's PerformanceManager at its real-time "
            "interval (20 s), the hypervisor_* columns of server_metrics.csv. CPU ready is the time a vCPU "
            "was ready to run but had no physical CPU; above "
            f"{CPU_READY_CONTENTION:g}% per vCPU (VMware's rule of thumb, KB 2002181) the hypervisor's CPU "
            "contention bounds the figures. Memory is fully reserved, so ballooning and swapping should be 0.",
            wide=True,
        )
    ]
    synthetic = sorted({f["target"] for f in figures if f["synthetic"]})
    if synthetic:
        blocks.append(
            Note(
                f"{', '.join(synthetic)}: govmomi's simulator, not ESXi: its performance counters are synthetic "
                "values and measure nothing."
            )
        )
    return blocks


def environment_section(data: dict) -> Section:
    """One row per run: hypervisor, budget, disk, network, archive settings, load host; then the hypervisor's view."""
    esxi = [f"{e['target']}, {e['run']}: {e['esxi']}" for e in data["environment"] if e.get("esxi")]
    return Section(
        "Environment",
        [
            Table(_ENV_HEADERS, _environment_rows(data), wide=True),
            *([Bullets(esxi)] if esxi else []),
            *hypervisor_blocks(data),
        ],
    )


def method_section(data: dict) -> Section:
    return Section("How the figures were computed", [Bullets(_method_items(data))])
