"""Ratios only between equal budgets: `compare` refuses unequal ones (exit 2) unless --allow-unequal-budgets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from synthetic import write_run


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


def budget(cpus: int, gib: int, enforced_by: str) -> dict:
    return {"cpus": cpus, "memory_bytes": gib << 30, "enforced_by": enforced_by}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")

    def run(name: str, kind: str, rate: float, b: dict):
        return write_run(
            root / name, rate=rate, target=kind, run_extra={"target": {"kind": kind, "label": kind, "budget": b}}
        )

    return {
        "native": run("native", "native", 100, budget(2, 2, "cgroup-v1")),
        "tcg": run("tcg", "tcg", 80, budget(2, 2, "guest")),
        "tcg-4cpu": run("tcg-4cpu", "tcg", 90, budget(4, 4, "guest")),
    }


def test_unequal_budgets_are_refused_in_one_line(runs, tmp_path):
    result = pacsbench("compare", runs["native"], runs["tcg-4cpu"], "--out", tmp_path / "cmp")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "budgets differ" in result.stderr
    assert "native: 2 CPUs, 2.0 GiB (cgroup-v1); tcg: 4 CPUs, 4.0 GiB (guest)" in result.stderr
    assert not (tmp_path / "cmp" / "summary.md").exists()


def test_with_the_flag_the_headline_says_the_budgets_differ(runs, tmp_path):
    result = pacsbench(
        "compare", runs["native"], runs["tcg-4cpu"], "--out", tmp_path / "cmp", "--allow-unequal-budgets"
    )
    assert result.returncode == 0, result.stderr
    headline = (tmp_path / "cmp" / "summary.md").read_text().splitlines()[2]
    assert "Budgets differ" in headline and "--allow-unequal-budgets" in headline
    assert json.loads((tmp_path / "cmp" / "summary.json").read_text())["budgets_note"].startswith("budgets differ")


def test_equal_budgets_compare_without_a_note(runs, tmp_path):
    result = pacsbench("compare", runs["native"], runs["tcg"], "--out", tmp_path / "cmp")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["budgets_note"] is None and summary["ratios"]
    assert "Budgets differ" not in (tmp_path / "cmp" / "summary.md").read_text()
