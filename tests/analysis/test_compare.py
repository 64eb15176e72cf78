import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic import write_run

from bench.analysis.aggregate import Settings, load_samples, measure, metric
from bench.analysis.confidence import PooledQuantile, WindowMeans, mean_interval
from bench.analysis.runset import load_runs
from bench.common.errors import UserError
from bench.report.page import build_comparison_report


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def native_and_vm(tmp_path_factory):
    """Two repetitions each: native stores 100 instances/s, the VM 80 (Poisson arrivals)."""
    root = tmp_path_factory.mktemp("runs")
    native = [write_run(root / f"native-{i}", rate=100, seed=i, target="native") for i in (1, 2)]
    vm = [
        write_run(
            root / f"vm-{i}",
            rate=80,
            seed=10 + i,
            target="esxi",
            latency_ms=25,
            run_extra={
                "target": {
                    "kind": "remote",
                    "label": "esxi",
                    "hypervisor": "VMware ESXi 8",
                    "vcpus": 4,
                    "disk": "thin, writeback",
                    "network": "bridged",
                }
            },
        )
        for i in (1, 2)
    ]
    return native, vm


def test_ratio_of_known_rates_lies_inside_its_interval(native_and_vm, tmp_path):
    native, vm = native_and_vm
    report = build_comparison_report([*native, *vm], tmp_path / "cmp")
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    ratio = next(r for r in summary["ratios"] if r["metric"] == "ingest_instances_per_s")
    assert ratio["target"] == "esxi" and ratio["repetitions"] == 2 and ratio["baseline_repetitions"] == 2
    assert ratio["ci_low"] <= 0.8 <= ratio["ci_high"] and ratio["ci_low"] < ratio["value"] < ratio["ci_high"]
    assert ratio["reading"] == "worse"
    latency = next(r for r in summary["ratios"] if r["metric"] == "c_store_p95_ms")
    assert latency["ci_low"] <= 1.25 <= latency["ci_high"]
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 3  # ratios, timeline, latency CDF
    assert "VMware ESXi 8" in html and "bridged" in html and "no calibration recorded" in html
    assert "esxi" in (tmp_path / "cmp" / "summary.md").read_text()


def test_intervals_shrink_with_more_windows():
    rng = np.random.default_rng(3)
    short = mean_interval([WindowMeans(rng.poisson(100, 12))])
    long = mean_interval([WindowMeans(rng.poisson(100, 80))])
    assert long.high - long.low < short.high - short.low
    assert short.contains(short.value) and long.contains(long.value)


def test_latency_percentile_pools_the_windows():
    windows = [np.arange(1.0, 11.0), np.arange(11.0, 21.0)]
    pooled = PooledQuantile(windows, 0.95)
    assert pooled.point() == np.quantile(np.arange(1.0, 21.0), 0.95, method="inverted_cdf")
    replicates = pooled.replicates(np.random.default_rng(0), 200)
    assert set(np.unique(replicates)) <= {10.0, 19.0, 20.0}  # 10 (first window twice), 19 (both), 20 (second twice)


def test_windows_of_a_run_add_up_to_its_rate(tmp_path):
    m = measure(load_samples(write_run(tmp_path / "r", rate=50, seconds=12)), Settings())
    windows = metric("ingest_instances_per_s").windows(m)
    assert len(windows) == m.full_windows == int(m.seconds)
    assert windows.point() == pytest.approx(metric("ingest_instances_per_s").value(m), rel=0.1)


def test_matrix_folder_labels_runs_by_its_entries(tmp_path):
    matrix = tmp_path / "matrix"
    write_run(matrix / "a", rate=60, seed=1, target="native", users=2)
    write_run(matrix / "b", rate=100, seed=2, target="native", users=4)
    write_run(tmp_path / "elsewhere", rate=40, seed=3, target="remote", users=2)
    (matrix / "matrix.json").write_text(
        json.dumps(
            {
                "scenario": "synthetic",
                "runs": [
                    {"folder": "a", "target": "native", "repetition": 1, "hypervisor": "none"},
                    {"folder": "b", "target": "native", "repetition": 1, "hypervisor": "none"},
                    {
                        "folder": str(tmp_path / "elsewhere"),
                        "target": "vbox",
                        "repetition": 1,
                        "hypervisor": "VirtualBox 7",
                    },
                ],
            }
        )
    )
    runs = load_runs([matrix])
    assert [(r.target, r.users, r.hypervisor) for r in runs] == [
        ("native", 2, "none"),
        ("native", 4, "none"),
        ("vbox", 2, "VirtualBox 7"),
    ]
    report = build_comparison_report([matrix], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(r["target"], r["users"]) for r in summary["ratios"] if r["metric"] == "ingest_instances_per_s"] == [
        ("vbox", 2)
    ]
    assert "scaling curve" in report.read_text()  # native ran at 2 and 4 users


def test_server_metrics_are_plotted_when_recorded(tmp_path):
    run = write_run(tmp_path / "r", rate=30, seconds=6)
    other = write_run(tmp_path / "s", rate=30, seconds=6, seed=2)
    times = 1_700_000_000.0 + np.arange(7)
    (run / "server_metrics.csv").write_text(
        "time,cpu_percent,memory_bytes\n" + "".join(f"{t},{50 + i},{1e8 + i * 1e6}\n" for i, t in enumerate(times))
    )
    html = build_comparison_report([run, other], tmp_path / "cmp").read_text()
    assert 'alt="server metrics"' in html and "s: no server metrics recorded" in html


def test_bad_comparison_input_is_one_line_and_exit_2(tmp_path):
    a = write_run(tmp_path / "a", rate=20, seconds=5, scenario="one")
    b = write_run(tmp_path / "b", rate=20, seconds=5, scenario="two", target="kvm")
    result = pacsbench("compare", a, b, "--out", tmp_path / "cmp")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "different scenarios" in result.stderr
    c = write_run(tmp_path / "c", rate=20, seconds=5, scenario="one", target="kvm")
    with pytest.raises(UserError, match="baseline target 'esxi'"):
        build_comparison_report([a, c], tmp_path / "cmp", baseline="esxi")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "matrix.json").write_text('{"scenario": "one", "runs": [{"folder": "gone", "target": "x"}]}')
    with pytest.raises(UserError, match="run folder not found"):
        load_runs([tmp_path / "m"])


def test_compare_prints_the_report_path_last(native_and_vm, tmp_path):
    native, vm = native_and_vm
    result = pacsbench("compare", native[0], vm[0], "--out", tmp_path / "cmp", "--warmup", "2s", "--window", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "cmp" / "report.html")
    assert json.loads((tmp_path / "cmp" / "summary.json").read_text())["settings"]["window_seconds"] == 2.0
