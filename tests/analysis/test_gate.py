import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from synthetic import write_run

from bench.analysis.aggregate import Settings
from bench.analysis.gate import load_baseline, parse_threshold


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    run = write_run(root / "baseline-run", rate=100, seed=1, find_rate=5)
    result = pacsbench("baseline", "save", run, "--out", root / "baseline.json")
    assert result.returncode == 0, result.stderr
    return root / "baseline.json"


@pytest.mark.parametrize("rate, expected", [(80, 1), (98, 0)])
def test_gate_fails_a_20_percent_drop_and_passes_a_2_percent_one(baseline, tmp_path, rate, expected):
    run = write_run(tmp_path / "release", rate=rate, seed=7, find_rate=5)
    junit = tmp_path / "gate.xml"
    result = pacsbench("gate", run, "--baseline", baseline, "--max-regression", "10%", "--junit", junit)
    assert result.returncode == expected, result.stdout + result.stderr
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == ["ingest_instances_per_s", "c_store_p95_ms", "c_find_p95_ms"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == (["ingest_instances_per_s"] if expected else [])


def test_gate_does_not_fail_on_noise(tmp_path):
    """A 15% lower mean in very bursty runs is within noise: the interval includes 1."""
    base = write_run(tmp_path / "base", rate=100, seconds=14, seed=1, burstiness=0.8)
    noisy = write_run(tmp_path / "noisy", rate=85, seconds=14, seed=2, burstiness=0.8)
    result = pacsbench("gate", noisy, "--baseline", base, "--metric", "ingest_instances_per_s")
    assert result.returncode == 0, result.stdout
    assert "includes 1" in result.stdout


def test_latency_regression_is_caught(baseline, tmp_path):
    slow = write_run(tmp_path / "slow", rate=100, seed=8, latency_ms=30, find_rate=5)
    result = pacsbench("gate", slow, "--baseline", baseline, "--metric", "c_store_p95_ms")
    assert result.returncode == 1 and "REGRESSION c_store_p95_ms" in result.stdout


def test_baseline_file_keeps_what_the_interval_needs(baseline):
    record = json.loads(baseline.read_text())
    saved = record["metrics"]["ingest_instances_per_s"]
    assert record["scenario"] == "synthetic" and record["settings"] == {"warmup_rule": "10%", "window_seconds": 1.0}
    assert len(saved["repetitions"]) == 1 and len(saved["repetitions"][0]) == 17  # full 1 s windows after warm-up
    assert saved["value"] == pytest.approx(sum(saved["repetitions"][0]) / 17)
    assert "c_store_p50_ms" not in record["metrics"]  # latency windows are raw: only p95 unless asked
    assert baseline.stat().st_size < 200_000


def test_bad_gate_input_exits_2_with_one_line(baseline, tmp_path):
    other = write_run(tmp_path / "other", rate=100, scenario="another")
    same = write_run(tmp_path / "same", rate=100, find_rate=5)
    cases = [
        (["gate", other, "--baseline", baseline], "scenario 'another'"),
        (["gate", tmp_path / "missing", "--baseline", baseline], "run folder not found"),
        (["gate", other, "--baseline", tmp_path / "nope.json"], "baseline not found"),
        (["gate", same, "--baseline", baseline, "--metric", "speed"], "unknown metric"),
        (["gate", same, "--baseline", baseline, "--metric", "c_get_p95_ms"], "baseline has no c_get_p95_ms"),
        (["gate", same, "--baseline", baseline, "--max-regression", "lots"], "--max-regression"),
    ]
    for args, message in cases:
        result = pacsbench(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_threshold_and_baseline_parsing(tmp_path):
    assert parse_threshold("10%") == pytest.approx(0.1) and parse_threshold("0.05") == pytest.approx(0.05)
    (tmp_path / "b.json").write_text("{}")
    with pytest.raises(Exception, match="not a pacsbench baseline"):
        load_baseline(tmp_path / "b.json", Settings())
