"""What bounded a run: the bound_by rules on hand-made resource series, and the verdict in summary.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from synthetic import T0, write_run

from bench.analysis.bounds import bound_by, measured_rows
from bench.report.page import build_report

QUIET = {
    "server_cpu_budget_percent": 30.0,
    "server_cpus_busy_percent": 40.0,
    "disk_busy_percent": 10.0,
    "net_sent_bytes_per_s": 1e6,
    "net_recv_bytes_per_s": 1e6,
    "net_link_bytes_per_s": 0,
    "load_busiest_cpu_percent": 40.0,
}


def series(seconds: int = 20, start: float = T0, **columns) -> pd.DataFrame:
    """One row per second from `start`, every column constant (QUIET unless given)."""
    values = QUIET | columns
    return pd.DataFrame(
        {"time": [start + 1 + i for i in range(seconds)], **{k: [v] * seconds for k, v in values.items()}}
    )


@pytest.mark.parametrize(
    "columns,limit,evidence",
    [
        ({"server_cpu_budget_percent": 97.0}, "server-cpu", "archive CPU 97% of 2 CPUs"),
        ({"server_cpus_busy_percent": 95.0}, "server-cpu", "its CPUs were 95% busy"),
        ({"disk_busy_percent": 90.0}, "disk", "data disk busy 90%"),
        (
            {"net_link_bytes_per_s": 125e6, "net_sent_bytes_per_s": 60e6, "net_recv_bytes_per_s": 50e6},
            "network",
            "network 110 MB/s of a 125 MB/s link",
        ),
        ({"load_busiest_cpu_percent": 96.0}, "client", "a load process at 96% of a core"),
        (
            {"guest_cpu_percent": 80.0, "guest_steal_percent": 12.0},
            "server-cpu",
            "the archive's machine saw its CPUs 80% busy and 12% stolen by its hypervisor (its own /metrics)",
        ),
        (
            {"hypervisor_cpu_ready_percent": 7.5},
            "hypervisor CPU contention",
            "CPU ready 7.5% per vCPU (ESXi's own counters; VMware's rule of thumb: contention from 5%)",
        ),
        ({}, "none-evident", "archive CPU 30% of 2 CPUs, disk 10% busy, busiest load process 40% of a core"),
    ],
)
def test_each_limit_has_a_stated_threshold(columns, limit, evidence):
    verdict = bound_by(series(**columns), cpus=2)
    assert verdict["limit"] == limit and evidence in verdict["evidence"]


def test_just_under_every_threshold_is_none_evident():
    verdict = bound_by(
        series(
            server_cpu_budget_percent=84.0,
            server_cpus_busy_percent=89.0,
            disk_busy_percent=84.0,
            load_busiest_cpu_percent=89.0,
        ),
        cpus=1,
    )
    assert verdict["limit"] == "none-evident"


def test_cpu_ready_under_five_percent_per_vcpu_is_no_contention_and_is_read_from_its_sparse_rows():
    """The hypervisor's samples fill one row in twenty (ESXi's 20 s interval): their mean is over those rows."""
    frame = series(hypervisor_cpu_ready_percent=4.9)
    frame.loc[frame.index % 20 != 0, "hypervisor_cpu_ready_percent"] = None
    verdict = bound_by(frame, cpus=2)
    assert verdict["limit"] == "none-evident" and "CPU ready 4.9% per vCPU" in verdict["evidence"]
    frame.loc[frame.index % 20 == 0, "hypervisor_cpu_ready_percent"] = 5.0
    assert bound_by(frame, cpus=2)["limit"] == "hypervisor CPU contention"


def test_cpu_ready_summation_becomes_percent_per_vcpu():
    """VMware KB 2002181: ready % = summation ms / (interval s x 1000) x 100, divided by the vCPUs for per vCPU."""
    from bench.targets.esxi.perf import columns

    figures = columns({"cpu.ready.summation": [2000.0], "cpu.usage.average": [5025.0]}, interval=20, vcpus=2)
    assert figures["hypervisor_cpu_ready_percent"] == 5.0  # 2000 ms of 20 s is 10%, over 2 vCPUs
    assert figures["hypervisor_cpu_usage_percent"] == 50.25  # ESXi gives hundredths of a percent
    slowest = columns({"virtualDisk.totalWriteLatency.average": [3.0, 12.0]}, interval=20, vcpus=2)
    assert slowest == {"hypervisor_disk_write_latency_ms": 12.0}


def test_a_saturated_archive_is_the_verdict_and_a_busy_client_is_listed_too():
    verdict = bound_by(series(server_cpu_budget_percent=95.0, load_busiest_cpu_percent=97.0), cpus=1)
    assert verdict["limit"] == "server-cpu" and verdict["evidence"] == "archive CPU 95% of 1 CPU"
    assert verdict["also"] == ["client: a load process at 97% of a core"]


def test_calibration_alone_makes_a_run_client_bound():
    assert bound_by(series(), 2, calibration_client_bound=True)["limit"] == "client"
    assert bound_by(None, 2, calibration_client_bound=True)["limit"] == "client"
    assert bound_by(None, 2)["limit"] == "not-measured"


def test_only_the_measured_seconds_count():
    busy = series(seconds=5, start=T0, server_cpu_budget_percent=100.0)  # a warm-up spike
    calm = series(seconds=15, start=T0 + 5)
    rows = measured_rows(pd.concat([busy, calm]), begin=T0 + 5, end=T0 + 20)
    assert len(rows) == 15 and bound_by(rows, 2)["limit"] == "none-evident"


def test_the_verdict_is_in_summary_json_and_the_headline(tmp_path):
    run = write_run(
        tmp_path / "run",
        rate=100,
        seconds=20,
        run_extra={
            "target": {
                "kind": "native",
                "label": "native",
                "budget": {"cpus": 1, "memory_bytes": 2 << 30, "enforced_by": "cgroup-v1"},
            }
        },
    )
    series(seconds=21, start=T0 - 1, server_cpu_budget_percent=98.0).to_csv(run / "server_metrics.csv", index=False)
    build_report(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bound_by"]["limit"] == "server-cpu"
    assert summary["bound_by"]["evidence"] == "archive CPU 98% of 1 CPU"
    assert summary["budget"]["enforced_by"] == "cgroup-v1"
    markdown = (run / "summary.md").read_text()
    assert "native bounded by server-cpu (archive CPU 98% of 1 CPU)" in markdown.splitlines()[2]
    assert 'alt="resource timelines"' in (run / "report.html").read_text()


def test_a_native_baseline_that_is_a_guest_says_so_in_the_headline(tmp_path):
    run = write_run(
        tmp_path / "run",
        run_extra={
            "target": {
                "kind": "native",
                "label": "native",
                "hypervisor": "kvm",
                "container": "docker",
                "declared_hypervisor": None,
                "hypervisor_source": "detected (the archive's /status)",
            }
        },
    )
    build_report(run)
    headline = (run / "summary.md").read_text().splitlines()[2]
    assert "native (itself a kvm guest in a docker container) bounded by not-measured" in headline
    assert "kvm (in a docker container; detected (the archive's /status))" in (run / "summary.md").read_text()
