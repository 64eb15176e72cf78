"""Open descriptors across runs: a process that runs a scenario again and again (as `matrix` does) ends each
run with the descriptors it started with, and the CLI raises the open-files limit at start-up."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # two full runs in one process (the edit loop has the unit tests)

# Patched for gevent first, as `pacsbench matrix` is: gevent's os.close is what left every
# directory of the archive's removed storage tree open (issue 15).
TWO_RUNS = """
from gevent import monkey

monkey.patch_all()

import os, json, sys
from pathlib import Path
from bench.runs.scenario_run import run_scenario

def open_descriptors():
    return len(os.listdir("/proc/self/fd"))

scenario, results = Path(sys.argv[1]), Path(sys.argv[2])
counts = [open_descriptors()]
for _ in range(2):
    _, record = run_scenario(scenario, results, progress=False, verify=True)
    assert record.status == "completed", record
    counts.append(open_descriptors())
print(json.dumps(counts))
"""

SCENARIO = """
name = "descriptors"
[target]
kind = "native"
[studies]
profile = "tiny"
pool = 2
seed = 1
[load]
users = 2
spawn_rate = 2
duration = 3
"""

# One-time state that may appear during the first run and stay (gevent's hub, a resolver
# pipe, a cached log handle) is a few descriptors; the leak this guards against was ~900
# per run with tiny studies, ~3,800 with the demo's.
MARGIN = 16


def test_a_second_run_in_one_process_ends_with_the_descriptors_of_the_first(tmp_path):
    scenario = tmp_path / "descriptors.toml"
    scenario.write_text(SCENARIO)
    result = subprocess.run(
        [sys.executable, "-c", TWO_RUNS, str(scenario), str(tmp_path / "results")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    before, after_first, after_second = json.loads(result.stdout.strip().splitlines()[-1])
    assert after_first - before <= MARGIN, (before, after_first, after_second)
    assert after_second - before <= MARGIN, (before, after_first, after_second)


def test_the_cli_raises_the_open_files_soft_limit_to_the_hard_limit():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise, or not to a number")
    low = 256

    def lower_the_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = (
        "import resource\nfrom bench.cli.main import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        preexec_fn=lower_the_soft_limit,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip().splitlines()[-1]) == hard
