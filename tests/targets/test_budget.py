"""Budgets on this host: a process placed in a cgroup before exec, its children with it, the cgroup removed after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.targets.budget import CFS_PERIOD_US, Budget, chosen_cpus

pytestmark = [pytest.mark.usefixtures("root")]  # cgroups are writable by root only
UNIFIED = Path("/sys/fs/cgroup/unified/cgroup.controllers")
# This machine's layout: v1 controllers mounted, a cgroup2 beside them without controllers.
V1_ONLY = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() and not (
    UNIFIED.exists() and UNIFIED.read_text().split()
)


@pytest.fixture
def budget():
    b = Budget(1, 512 << 20, f"pacsbench-test-{os.getpid()}")
    b.prepare()
    yield b
    b.release()


def test_a_grandchild_runs_in_the_budget_and_the_limits_are_written(budget):
    assert budget.enforced_by in ("cgroup-v1", "cgroup-v2")
    if V1_ONLY:
        assert budget.enforced_by == "cgroup-v1" and budget.controllers == ["cpuset", "cpu", "memory"]
    grandchild = subprocess.run(
        ["sh", "-c", "sh -c 'cat /proc/self/cgroup'"],
        capture_output=True,
        text=True,
        preexec_fn=budget.enter,
        check=True,
    ).stdout
    placed = [line for line in grandchild.splitlines() if line.endswith(budget.name)]
    assert len(placed) == len(budget.folders)
    files = {f.name: f for folder in budget.folders for f in folder.iterdir()}
    if budget.enforced_by == "cgroup-v1":
        assert files["cpu.cfs_quota_us"].read_text().strip() == str(CFS_PERIOD_US)
        assert files["memory.limit_in_bytes"].read_text().strip() == str(512 << 20)
        assert files["cpuset.cpus"].read_text().strip() == ",".join(map(str, chosen_cpus(1)))
    else:
        assert files["cpu.max"].read_text().split() == [str(CFS_PERIOD_US), str(CFS_PERIOD_US)]
        assert files["memory.max"].read_text().strip() == str(512 << 20)
    assert budget.describe() | {"cpu_ids": None, "controllers": None} == {
        "cpus": 1,
        "memory_bytes": 512 << 20,
        "enforced_by": budget.enforced_by,
        "cpu_ids": None,
        "controllers": None,
    }


def test_release_removes_the_cgroups(budget):
    folders = list(budget.folders)
    assert folders and all(f.is_dir() for f in folders)
    subprocess.run(["true"], preexec_fn=budget.enter, check=True)  # a process that has come and gone
    budget.release()
    assert not any(f.exists() for f in folders)


def test_affinity_alone_pins_the_process():
    pinned = Budget(1, 512 << 20, "unused", enforced_by="affinity", cpu_ids=chosen_cpus(1))
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        capture_output=True,
        text=True,
        preexec_fn=pinned.enter,
        check=True,
    ).stdout
    assert out.strip() == str(chosen_cpus(1))
