"""generate -> store -> measure -> verify -> report, through the real CLI, against the real archive."""

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # real runs of the locust engine against the archive, as tests/load/test_load.py


def pacsbench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    # Verified by WADO-RS before the archive stops: it serves DICOMweb for that, without DICOMweb users.
    smoke = ROOT / "scenarios" / "smoke.toml"
    result = pacsbench("run", smoke, "--results", results, "--no-progress", "--verify-protocol", "dicomweb")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.parent == results
    return run_dir


def test_every_acknowledged_store_is_one_sample_and_one_index_row(smoke_run):
    samples = pd.read_csv(smoke_run / "samples.csv", dtype={"sop_instance_uid": str, "error": str})
    stores = samples[samples["operation"] == "C-STORE"]
    acknowledged = stores[stores["status"] == 0]
    assert len(acknowledged) > 0
    assert acknowledged["sop_instance_uid"].is_unique
    with sqlite3.connect(smoke_run / "archive" / "index.sqlite") as db:
        indexed = {row[0] for row in db.execute("SELECT sop_uid FROM instance")}
    assert indexed == set(acknowledged["sop_instance_uid"])


def test_samples_carry_the_documented_columns(smoke_run):
    samples = pd.read_csv(smoke_run / "samples.csv")
    for column in [
        "start",
        "worker",
        "user",
        "user_type",
        "association",
        "operation",
        "instances",
        "frames",
        "bytes",
        "latency_ms",
        "status",
        "error",
    ]:
        assert column in samples.columns
    assert samples["user"].nunique() == 2 and samples["association"].nunique() == 2
    assert (samples["latency_ms"] > 0).all() and (samples["frames"] >= 8).all()


def test_run_json_says_what_was_measured_and_where(smoke_run):
    run = json.loads((smoke_run / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["scenario"]["studies"]["profile"] == "tiny"
    assert run["target"]["kind"] == "native" and run["target"]["fsync"] is True
    assert run["target"]["exit_code"] == 0
    assert run["versions"]["pynetdicom"] and run["host"]["cpus"] >= 1
    assert run["load_seconds"] >= run["scenario"]["load"]["duration"]
    assert not (smoke_run / "archive" / "storage").exists()  # images removed, index kept


def test_every_acknowledged_instance_comes_back_by_wado_rs_unchanged(smoke_run):
    run = json.loads((smoke_run / "run.json").read_text())
    verify = run["verify"]
    assert verify["ok"] and verify["protocol"] == "WADO-RS" and verify["instances"] == verify["returned"] > 0
    assert verify["target"] == run["target"]["dicomweb_url"] and run["target"]["dicomweb_url"].endswith("/dicom-web")


def test_locust_statistics_agree_with_the_samples(smoke_run):
    samples = pd.read_csv(smoke_run / "samples.csv")
    stats = pd.read_csv(smoke_run / "locust_stats.csv")
    row = stats[stats["Name"] == "C-STORE"].iloc[0]
    assert row["Request Count"] == (samples["operation"] == "C-STORE").sum()
    assert (smoke_run / "locust_stats_history.csv").stat().st_size > 0


def test_report_shows_non_zero_throughput(smoke_run):
    result = pacsbench("report", smoke_run)
    assert result.returncode == 0, result.stderr
    report = Path(result.stdout.strip().splitlines()[-1])
    assert report == smoke_run / "report.html"
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["instances_per_s"] > 0 and summary["frames_per_s"] > 0 and summary["mb_per_s"] > 0
    html = report.read_text()
    assert "data:image/png;base64," in html and "instances/s" in html
    assert "| instances/s |" in (smoke_run / "summary.md").read_text()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_target_is_one_line_and_recorded(tmp_path):
    scenario = tmp_path / "remote.toml"
    scenario.write_text(
        f'[target]\nkind = "remote"\nhost = "127.0.0.1"\nport = {_closed_port()}\n'
        '[studies]\nprofile = "tiny"\npool = 1\n[load]\nusers = 1\nduration = 1\n[client]\ntimeout = 3\n'
    )
    result = pacsbench("run", scenario, "--results", tmp_path / "r", "--no-progress", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer C-ECHO" in lines[0] and "connection refused" in lines[0]
    (run_dir,) = (tmp_path / "r").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "failed" and "connection refused" in run["error"]


@pytest.mark.parametrize("command", ["generate", "serve", "run", "report"])
def test_every_subcommand_explains_itself(command):
    result = pacsbench(command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout and len(result.stdout) > 200


def test_a_single_five_second_run_cannot_pass_or_fail_the_gate(smoke_run, tmp_path):
    """5 s of load is fewer than 10 full windows: no interval, so the gate cannot decide (exit 2), never 0 or 1."""
    baseline = tmp_path / "baseline.json"
    assert pacsbench("baseline", "save", smoke_run, "--out", baseline).returncode == 0
    result = pacsbench("gate", smoke_run, "--baseline", baseline, "--junit", tmp_path / "gate.xml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CANNOT DECIDE ingest_instances_per_s" in result.stdout and "too short" in result.stdout


@pytest.mark.parametrize("command", [["compare"], ["gate"], ["baseline", "save"]])
def test_reporting_subcommands_explain_themselves(command):
    result = pacsbench(*command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout and len(result.stdout) > 200
