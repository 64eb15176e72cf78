"""The load engine end to end: locust users of every type, master + workers, shapes, C-MOVE and
C-GET, verification, calibration and bad input, through the real CLI against the reference archive."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT
from helpers.archive import start_archive, wait_for_echo

from bench.results.samples import COLUMNS

# Each test drives a full run through the CLI: together about half of what make test-fast would take.
pytestmark = pytest.mark.slow


def pacsbench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def scenario(tmp_path: Path, body: str, name: str = "s", prefill: int = 0) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\n[studies]\nprofile = "tiny"\npool = 2\nprefill = {prefill}\n' + body)
    return path


def run(path: Path, results: Path, *options, expect: int = 0) -> tuple[Path, dict, subprocess.CompletedProcess]:
    result = pacsbench("run", path, "--results", results, "--no-progress", *options)
    assert result.returncode == expect, result.stdout + result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    return run_dir, json.loads((run_dir / "run.json").read_text()), result


def samples(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "samples.csv", dtype={"error": str, "sop_instance_uid": str}).fillna({"error": ""})


def indexed_instances(run_dir: Path) -> set[str]:
    with sqlite3.connect(run_dir / "archive" / "index.sqlite") as db:
        return {row[0] for row in db.execute("SELECT sop_uid FROM instance")}


NATIVE = '[target]\nkind = "native"\nfsync = false\n'


def test_two_workers_one_samples_file_matching_the_archive(tmp_path):
    path = scenario(tmp_path, NATIVE + "[load]\nusers = 4\nduration = 4\n")
    run_dir, record, _ = run(path, tmp_path / "r", "--workers", "2", "--verify")
    rows = samples(run_dir)
    assert list(rows.columns) == COLUMNS
    assert rows["worker"].nunique() == 2 and rows["user"].nunique() == 4
    stored = rows[(rows["operation"] == "C-STORE") & (rows["status"] == 0)]
    assert len(stored) > 0 and (rows["error"] == "").all()
    assert set(stored["sop_instance_uid"]) == indexed_instances(run_dir)
    assert len(pd.read_csv(run_dir / "sent.csv")) == len(stored)
    assert record["load_processes"] == {"mode": "distributed", "local_workers": 2, "remote_workers": 0}
    assert len(record["workers"]) == 2 and record["verify"]["ok"] and record["verify"]["instances"] == len(stored)
    for worker in record["workers"]:  # one machine, one clock: the measured offset is within its error bound
        assert worker["address"] == "127.0.0.1" and worker["host_name"] == socket.gethostname()
        assert abs(worker["clock_offset_seconds"]) <= worker["clock_round_trip_seconds"] / 2 + 1e-6  # float rounding
    stats = pd.read_csv(run_dir / "locust_stats.csv")
    assert stats.loc[stats["Name"] == "C-STORE", "Request Count"].iloc[0] == len(stored)


RETRIEVE = (
    NATIVE
    + """
[load]
duration = 5
[users.modality]
count = 1
studies_per_hour = 3600
[users.workstation]
count = 3
retrieve = "{retrieve}"
reading_images_per_s = 50
check_digests = true
"""
)


@pytest.mark.parametrize(
    "retrieve, operation, workers", [("move", "C-MOVE", 0), ("get", "C-GET", 0), ("move", "C-MOVE", 2)]
)
def test_retrieval_counts_sub_operations_and_returns_identical_bytes(tmp_path, retrieve, operation, workers):
    path = scenario(tmp_path, RETRIEVE.format(retrieve=retrieve), "retrieve", prefill=3)
    run_dir, record, _ = run(path, tmp_path / "r", "--workers", str(workers), "--verify")
    rows = samples(run_dir)
    retrieved = rows[rows["operation"] == operation]
    assert len(retrieved) > 0 and (rows["error"] == "").all()
    assert (retrieved["instances"] > 0).all() and (retrieved["bytes"] > 0).all() and (retrieved["frames"] > 0).all()
    subops = pd.read_csv(run_dir / "suboperations.csv")
    assert len(subops) == len(retrieved) and (subops["completed"] == subops["arrived"]).all()
    assert (subops["failed"] == 0).all() and subops["arrived_bytes"].sum() == retrieved["bytes"].sum()
    assert record["suboperations"][operation]["completed"] == retrieved["instances"].sum()
    sent = pd.read_csv(run_dir / "sent.csv").set_index("sop_instance_uid")
    back = pd.read_csv(run_dir / "retrieved.csv")
    assert len(back) == retrieved["instances"].sum()
    assert (back["digest"].to_numpy() == sent.loc[back["sop_instance_uid"], "digest"].to_numpy()).all()
    assert (back["bytes"].to_numpy() == sent.loc[back["sop_instance_uid"], "bytes"].to_numpy()).all()
    assert record["verify"]["ok"] and record["verify"]["retrieved_checked"] == len(back)
    if retrieve == "move":
        assert (run_dir / "archive.toml").read_text().count("[destinations.") == max(1, workers)


def test_the_papers_day_scenario_with_tiny_studies(tmp_path):
    """The shipped scenario's users (a DSA unit, 20 workstations), shortened and with tiny studies."""
    text = (ROOT / "scenarios" / "papers-day.toml").read_text()
    text = text.replace('profile = "dsa-unit"', 'profile = "tiny"').replace("duration = 120", "duration = 8")
    text = text.replace("prefill = 20", "prefill = 5").replace("studies_per_hour = 1800", "studies_per_hour = 3600")
    path = tmp_path / "papers-day.toml"
    path.write_text(text.replace('kind = "native"', 'kind = "native"\nfsync = false'))
    run_dir, record, result = run(path, tmp_path / "r")
    rows = samples(run_dir)
    assert (rows["error"] == "").all()
    assert rows.groupby("user_type")["user"].nunique().to_dict() == {"modality": 1, "workstation": 20}
    assert set(rows["operation"]) == {"C-STORE", "C-FIND", "C-MOVE"}
    assert record["prefill"]["studies"] == 5
    # A modality paced by studies per hour sends each study on an association of its own, as scanners do: an idle
    # association between studies would outlive the archive's idle timeout (60 s) and break the next store.
    stores = rows[rows["operation"] == "C-STORE"]
    studies_per_association = stores.groupby("association")["study_instance_uid"].nunique()
    assert len(studies_per_association) >= 2 and (studies_per_association == 1).all(), studies_per_association
    for user_type in ("modality", "workstation"):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(f"{user_type}:"))
        assert "instances/s" in line and "frames/s" in line and "MB/s" in line and " 0 failed" in line
    summary = pacsbench("report", run_dir)
    assert summary.returncode == 0, summary.stderr
    figures = json.loads((run_dir / "summary.json").read_text())["user_types"]
    assert figures["workstation"]["instances_per_s"] > 0 and figures["modality"]["mb_per_s"] > 0


def test_query_and_echo_users_and_a_step_shape(tmp_path):
    path = scenario(
        tmp_path,
        NATIVE
        + """
[load]
shape = "steps"
steps = [3, 4]
step_seconds = 3
[users.modality]
weight = 1
[users.query]
count = 1
level = "IMAGE"
[users.echo]
count = 1
interval = 0.2
""",
        prefill=2,
    )
    run_dir, record, result = run(path, tmp_path / "r")
    rows = samples(run_dir)
    assert (rows["error"] == "").all()
    assert set(rows["operation"]) == {"C-STORE", "C-FIND", "C-ECHO"}
    assert [s["users"] for s in record["steps"]] == [3, 4]
    assert all(s["instances_per_s"] > 0 for s in record["steps"])
    modalities = rows[rows["user_type"] == "modality"]["user"].nunique()
    assert modalities == 2  # 4 users in the last step: query and echo are fixed, the rest are modalities
    assert "step   4 users:" in result.stdout


def test_paced_users_keep_their_rate_through_locusts_wait_time_helpers(tmp_path):
    """constant_throughput per query; per study for a modality (its instances go back to back)."""
    duration, queries_per_s, studies_per_hour = 6, 4, 1800
    body = (
        f"[load]\nduration = {duration}\n[users.modality]\ncount = 1\nstudies_per_hour = {studies_per_hour}\n"
        f"[users.query]\ncount = 1\nqueries_per_s = {queries_per_s}\n"
    )
    run_dir, _, _ = run(scenario(tmp_path, NATIVE + body), tmp_path / "r")
    rows = samples(run_dir)
    assert (rows["error"] == "").all()
    # One request when the user starts, then one per period until the run stops it.
    queries = int((rows["operation"] == "C-FIND").sum())
    assert 0.8 * duration * queries_per_s <= queries <= duration * queries_per_s + 2
    studies = rows.loc[rows["operation"] == "C-STORE", "study_instance_uid"].nunique()
    per_run = duration * studies_per_hour / 3600.0  # a study starts every 2 s: at 0, 2 and 4
    assert per_run - 1 <= studies <= per_run + 1


def test_piped_output_has_no_progress_bars_and_ends_with_the_run_folder(tmp_path, monkeypatch):
    """Progress bars (pool generation, load) only on a terminal: here stdout and stderr are pipes."""
    monkeypatch.setenv("PACSBENCH_CACHE", str(tmp_path / "cache"))  # the pool is generated: its bars would show
    path = scenario(tmp_path, NATIVE + "[load]\nusers = 1\nduration = 3\n")
    result = pacsbench("run", path, "--results", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "\r" not in output and "it/s" not in output and "\u2588" not in output and "%|" not in output
    run_dir = Path(result.stdout.splitlines()[-1])
    assert run_dir.parent == tmp_path / "r" and (run_dir / "run.json").is_file()


def test_calibration_is_recorded_and_flags_client_bound_figures(tmp_path):
    calibrated = pacsbench("calibrate", "--profile", "tiny", "--instances", "30", "--no-progress")
    assert calibrated.returncode == 0, calibrated.stderr
    stored = json.loads(Path(calibrated.stdout.strip().splitlines()[-1]).read_text())
    entry = stored["entries"][stored["latest"]]
    assert entry["instances_per_s"] > 0 and entry["sink"]
    for request in ("stow", "wado"):  # the DICOMweb users' own ceilings, against the null DICOMweb peer
        rates = entry["dicomweb"][request]
        assert rates["instances"] >= 30 and rates["failures"] == 0 and rates["mb_per_s"] > 0
        assert 0 <= rates["peer_cpu_share"] < 2 and 0 < rates["harness_cpu_share"] < 2
    assert calibrated.stdout.count("harness DICOMweb ceiling") == 2
    path = scenario(tmp_path, NATIVE + "[load]\nusers = 2\nduration = 3\n")
    run_dir, record, _ = run(path, tmp_path / "r")
    calibration = record["calibration"]
    assert calibration["ceiling_instances_per_s"] == entry["instances_per_s"]
    assert calibration["ceiling_mb_per_s"] == entry["mb_per_s"]
    assert calibration["stow_ceiling_instances_per_s"] == entry["dicomweb"]["stow"]["instances_per_s"]
    assert calibration["wado_ceiling_mb_per_s"] == entry["dicomweb"]["wado"]["mb_per_s"]
    assert pacsbench("report", run_dir).returncode == 0
    note = json.loads((run_dir / "summary.json").read_text())["calibration"]["note"]
    assert note.startswith(("CLIENT-BOUND", "below 80% of the harness ceiling"))


def test_verify_finds_a_lost_and_a_changed_instance(tmp_path):
    path = scenario(tmp_path, NATIVE + "keep_data = true\n[load]\nusers = 1\nduration = 2\n")
    run_dir, _, _ = run(path, tmp_path / "r")
    good = pacsbench("verify", run_dir)
    assert good.returncode == 0 and good.stdout.startswith("verified "), good.stdout + good.stderr
    stored = sorted((run_dir / "archive" / "storage").rglob("*.dcm"))
    stored[0].unlink()
    data = bytearray(stored[1].read_bytes())
    data[-1] ^= 0xFF
    stored[1].write_bytes(bytes(data))
    bad = pacsbench("verify", run_dir)
    assert bad.returncode == 1
    assert "verification FAILED" in bad.stdout and "1 lost" in bad.stdout and "1 changed" in bad.stdout
    record = json.loads((run_dir / "run.json").read_text())
    assert record["verify"]["ok"]  # the first verification stays as it was; the later one goes beside it
    later = record["verify_later"][-1]
    assert later["missing"] == 1 and later["different"] == 1 and not later["ok"]
    assert pacsbench("report", run_dir).returncode == 0
    integrity = json.loads((run_dir / "summary.json").read_text())["integrity"]
    assert integrity.startswith("VERIFICATION FAILED: 1 lost, 1 changed")  # the latest leads


def test_verify_without_kept_data_says_how_to_verify(tmp_path):
    run_dir, _, _ = run(scenario(tmp_path, NATIVE + "[load]\nusers = 1\nduration = 1\n"), tmp_path / "r")
    result = pacsbench("verify", run_dir)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "keep_data = true" in result.stderr and "--verify" in result.stderr


def _wait_for_stores(results: Path, rows: int = 20, timeout: float = 60.0) -> None:
    """Until the run folder's samples.csv shows the users storing (the flush comes every 50 rows)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(results.glob("*/samples.csv"))
        if found and len(found[0].read_text().splitlines()) > rows:
            return
        time.sleep(0.1)
    raise AssertionError("the run never started storing")


def test_an_archive_killed_mid_study_is_recorded_and_nothing_hangs(tmp_path):
    archive = start_archive(tmp_path / "archive", "--no-fsync")
    wait_for_echo(archive.port, archive.ae_title)
    path = scenario(
        tmp_path,
        f'[target]\nkind = "remote"\nport = {archive.port}\n'
        "[load]\nusers = 2\nduration = 8\nstop_timeout = 5\n[client]\ntimeout = 5\n",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--results", str(tmp_path / "r"), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    _wait_for_stores(tmp_path / "r")
    os.killpg(archive.process.pid, signal.SIGKILL)  # the supervisor and its forked workers
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    run_dir = Path(stdout.strip().splitlines()[-1])
    rows = samples(run_dir)
    failed = rows[rows["error"] != ""]
    assert (rows["status"] == 0).any() and len(failed) > 0
    assert set(failed["operation"]) <= {"C-STORE", "ASSOCIATE"}
    assert failed["error"].str.contains("connection refused|closed|aborted|failed", regex=True).all()
    warnings = [line for line in stderr.splitlines() if line.startswith("pacsbench: warning:")]
    assert len(warnings) == 1 and "requests failed (most frequent:" in warnings[0]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


def test_a_rejecting_target_is_one_line_and_recorded(tmp_path):
    config = tmp_path / "archive.toml"
    config.write_text('allowed_calling_aets = ["SOMEONE-ELSE"]\n')
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    try:
        path = scenario(
            tmp_path,
            f'[target]\nkind = "remote"\nport = {archive.port}\n'
            "[load]\nusers = 1\nduration = 1\n[client]\ntimeout = 3\n",
        )
        result = pacsbench("run", path, "--results", tmp_path / "r", "--no-progress", timeout=120)
    finally:
        archive.stop()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rejected" in lines[0]
    (run_dir,) = (tmp_path / "r").iterdir()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_workers_that_never_join_end_in_one_line(tmp_path):
    path = scenario(tmp_path, NATIVE + "[load]\nusers = 1\nduration = 1\n")
    result = pacsbench(
        "run",
        path,
        "--results",
        tmp_path / "r",
        "--no-progress",
        "--remote-workers",
        "1",
        "--master-port",
        "0",
        "--workers-timeout",
        "5",
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "0 of 1 workers ready" in lines[0] and "pacsbench worker --master" in lines[0]


def test_a_worker_without_a_master_gives_up(tmp_path, unused_port):
    result = pacsbench(
        "worker", "--master", "127.0.0.1", "--master-port", unused_port, "--join-timeout", "5", timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("pacsbench: error: no pacsbench master answered")
