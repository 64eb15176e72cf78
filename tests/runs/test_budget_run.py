"""A native archive held to 1 CPU: its run records the budget, a resource row per second, and server-cpu."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT

from bench.results.server_metrics import COLUMNS
from server_under_test.environment import detect_hypervisor

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("root")]  # cgroups are writable by root only

# Very small instances (64x64, a few frames: ~25 KB), fsync off, 8 users against one CPU: each
# store costs the archive its per-instance work (DIMSE, index, file) and almost no disk time,
# so its one worker, not the disk, is what limits (with the tiny profile's 1.3 MB instances
# written with O_DIRECT, the disk was as busy as the CPU).
PROFILE = """
description = "Very small XA instances: per-instance work, not bytes"
rows = 64
columns = 64
bits_stored = 12
frame_rate = 4.0
body_part = "HEAD"
mask_frames = 2
dose = 1000.0
pixel_intensity_relationship = "LOG"
transfer_syntax = "explicit"
runs_per_study = { min = 4, max = 6 }
frames_per_run = { min = 3, max = 4 }
studies_per_patient = { min = 1, max = 2 }
"""
SCENARIO = """
name = "one-cpu"
[target]
kind = "native"
fsync = false
cpus = 1
memory_mib = 1024
[studies]
profile = "PROFILE_PATH"
pool = 2
[load]
users = 8
duration = 10
"""


def pacsbench(*args):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


@pytest.fixture(scope="module")
def one_cpu_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one-cpu")
    (folder / "micro.toml").write_text(PROFILE)
    (folder / "one-cpu.toml").write_text(SCENARIO.replace("PROFILE_PATH", str(folder / "micro.toml")))
    result = pacsbench("run", folder / "one-cpu.toml", "--results", folder / "results", "--no-progress")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert pacsbench("report", run_dir).returncode == 0
    return run_dir


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_budget_is_recorded_with_what_enforced_it(one_cpu_run):
    budget = json.loads((one_cpu_run / "run.json").read_text())["target"]["budget"]
    assert budget["cpus"] == 1 and budget["memory_bytes"] == 1024 << 20
    assert budget["enforced_by"] in ("cgroup-v1", "cgroup-v2")


def test_a_resource_row_for_every_second_of_load(one_cpu_run):
    run = json.loads((one_cpu_run / "run.json").read_text())
    rows = pd.read_csv(one_cpu_run / "server_metrics.csv")
    assert tuple(rows.columns) == COLUMNS
    load = rows[(rows["time"] > _unix(run["started"])) & (rows["time"] <= _unix(run["ended"]))]
    assert len(load) >= int(run["load_seconds"]) - 1  # the first row comes a second after the sampler starts
    assert rows["time"].diff().dropna().max() < 1.5
    assert (load["server_processes"] == 2).all()  # the supervisor and its one worker (workers = cpus)
    assert load["server_rss_bytes"].min() > 0 and load["load_busiest_cpu_percent"].max() > 0


def test_one_cpu_for_tiny_instances_without_fsync_is_server_cpu(one_cpu_run):
    verdict = json.loads((one_cpu_run / "summary.json").read_text())["bound_by"]
    assert verdict["limit"] == "server-cpu", verdict


def test_the_headline_says_the_native_host_is_itself_a_guest(one_cpu_run):
    host = detect_hypervisor()
    target = json.loads((one_cpu_run / "run.json").read_text())["target"]
    assert (target["hypervisor"], target["container"]) == (host["hypervisor"], host["container"])
    assert target["declared_hypervisor"] is None and target["hypervisor_source"].startswith("detected")
    if host["hypervisor"] != "none":  # here: "native (itself a kvm guest in a docker container)"
        assert f"native (itself a {host['hypervisor']} guest" in (one_cpu_run / "summary.md").read_text()
