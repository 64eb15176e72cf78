"""Intervals state what they rest on: repetitions, a single run's windows, or nothing (too short)."""

import json
import subprocess
import sys

import numpy as np
from synthetic import write_run

from bench.analysis.confidence import (
    MIN_WINDOWS,
    SINGLE_RUN,
    WindowMeans,
    block_length,
    mean_interval,
    ratio_interval,
)
from bench.runs.matrix import rotated_order


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


def test_block_length_follows_the_autocorrelation():
    rng = np.random.default_rng(1)
    assert block_length(rng.normal(size=200)) == 1  # independent windows: blocks of one
    slow = np.repeat(rng.normal(size=20), 10)  # each value held for 10 windows
    assert 4 <= block_length(slow) <= 10
    assert block_length(np.full(30, 5.0)) == 1 and block_length([1.0, 2.0]) == 1  # no variation, too few


def test_a_single_run_says_it_has_no_run_to_run_estimate():
    rng = np.random.default_rng(2)
    single = mean_interval([WindowMeans(rng.poisson(100, 30))])
    repeated = mean_interval([WindowMeans(rng.poisson(100, 30)) for _ in range(3)])
    assert single.decided and single.evidence.single_run and SINGLE_RUN in single.as_dict()["evidence"]
    assert repeated.decided and not repeated.evidence.single_run and "3 repetitions" in repeated.as_dict()["evidence"]


def test_fewer_than_ten_windows_give_no_interval():
    short = [WindowMeans(np.full(MIN_WINDOWS - 1, 100.0))]
    long = [WindowMeans(np.full(MIN_WINDOWS, 100.0))]
    assert not mean_interval(short).decided and mean_interval(short).as_dict()["ci_low"] is None
    assert mean_interval(long).decided
    ratio = ratio_interval(long, short)  # the weaker side decides
    assert not ratio.decided and ratio.evidence.kind == "too short" and not ratio.contains(ratio.value)


def test_compare_of_two_single_runs_says_so(tmp_path):
    native = write_run(tmp_path / "native", rate=100, seconds=20, target="native")
    vm = write_run(tmp_path / "vm", rate=80, seconds=20, seed=2, target="kvm")
    result = pacsbench("compare", native, vm, "--out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    assert f"compare: ratios of kvm to native: {SINGLE_RUN}" in result.stdout
    assert SINGLE_RUN in (tmp_path / "cmp" / "summary.md").read_text()
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    ratio = next(r for r in summary["ratios"] if r["metric"] == "ingest_instances_per_s")
    assert ratio["evidence_kind"] == SINGLE_RUN and ratio["ci_low"] < ratio["value"] < ratio["ci_high"]


def test_compare_of_short_runs_says_too_short(tmp_path):
    native = write_run(tmp_path / "native", rate=100, seconds=5, target="native")
    vm = write_run(tmp_path / "vm", rate=80, seconds=5, seed=2, target="kvm")
    result = pacsbench("compare", native, vm, "--out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    assert "compare: ratios of kvm to native: too short" in result.stdout
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    ratio = next(r for r in summary["ratios"] if r["metric"] == "ingest_instances_per_s")
    assert ratio["ci_low"] is None and ratio["reading"].startswith("cannot tell")


def test_a_single_five_second_run_makes_gate_exit_2(tmp_path):
    baseline = write_run(tmp_path / "baseline", rate=100, seconds=30)
    run = write_run(tmp_path / "run", rate=50, seconds=5, seed=2)  # half as fast, but only 5 s of evidence
    result = pacsbench("gate", run, "--baseline", baseline, "--junit", tmp_path / "gate.xml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CANNOT DECIDE ingest_instances_per_s" in result.stdout and "too short" in result.stdout
    assert 'errors="2"' in (tmp_path / "gate.xml").read_text()


def test_matrix_rotates_the_order_per_repetition():
    assert [rotated_order(["A", "B", "C"], r) for r in (1, 2, 3, 4)] == [
        ["A", "B", "C"],
        ["B", "C", "A"],
        ["C", "A", "B"],
        ["A", "B", "C"],
    ]
