"""The archive's benchmark scripts run end to end on a small scale (their figures are not
checked: speed is measured, not asserted), and refuse a run the disk cannot hold."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow
NUMBER = r"\d+\.\d+"


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def test_ingest_benchmark_runs_every_target_and_prints_the_ratios(dcmtk, orthanc, tmp_path):
    dcmtk.require("storescu", "storescp")
    work = tmp_path / "work"
    args = ("--instances", "8", "--rounds", "1", "--settle", "0", "--work", str(work))
    result = run_module("bench.benchmarks.archive_ingest", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    for target in (
        "reference-archive",
        "orthanc",
        "storescp",
        "clients-ceiling",
        "plain-fsync-writers",
        "plain-direct-writers",
    ):
        assert re.search(rf"^  {target} +{NUMBER} instances/s", result.stdout, re.M), target
    for ratio in ("Orthanc", "physical limit", "clients' ceiling"):
        assert re.search(rf"reference archive / {ratio} += {NUMBER}x", result.stdout), ratio
    assert re.search(r"file creation on the work disk: \d+ µs of CPU per file", result.stdout)
    # Nothing is deleted on the work disk before the run ends (a deletion makes ext4 without a journal charge
    # the next targets' file creations): the writers' and storescp's files are kept like the archives'; the
    # round's input was on tmpfs, or was the only thing removed.
    assert not list(work.glob("round-*"))
    for writers in ("plain-fsync-writers-0", "plain-direct-writers-0"):
        assert len(list((work / writers).glob("*.dcm"))) == 8, writers
    assert len(list((work / "storescp").iterdir())) == 8
    assert len(list((work / "reference-archive").rglob("*.dcm"))) == 8


def test_ingest_benchmark_compares_two_archive_trees_alone(dcmtk, tmp_path):
    """--archives-only with --compare-tree: the two archives, alternated, and their ratio; no other target."""
    dcmtk.require("storescu", "storescp")
    work = tmp_path / "work"
    args = ("--instances", "8", "--rounds", "2", "--archives-only", "--compare-tree", str(ROOT), "--settle", "0")
    args += ("--work", str(work))
    result = run_module("bench.benchmarks.archive_ingest", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    other = f"archive-{ROOT.name}"
    for target in ("reference-archive", other):
        assert re.search(rf"^  {target} +{NUMBER} instances/s", result.stdout, re.M), target
    assert re.search(rf"reference archive / {other} += {NUMBER}x", result.stdout)
    assert not re.search(r"orthanc|storescp|writers", result.stdout)
    assert len(list((work / other).rglob("*.dcm"))) == 16


def test_ingest_benchmark_refuses_a_run_the_disk_cannot_hold(dcmtk, tmp_path):
    dcmtk.require("storescu", "storescp")  # the script looks for them before it looks at the disk
    result = run_module("bench.benchmarks.archive_ingest", "--instances", "10000000", "--work", str(tmp_path / "w"))
    assert result.returncode != 0
    assert re.search(r"need about [\d.]+ GB free, the file system has [\d.]+ GB", result.stderr)
    assert not (tmp_path / "w").exists()


def test_find_benchmark_prints_both_clients_and_the_server(tmp_path):
    result = run_module("bench.benchmarks.archive_find", "--instances", "2000", "--queries", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    for kind in ("PatientID", "AccessionNumber", "StudyDate (1 day)", "StudyDate (7 days) + XA", "PatientName prefix*"):
        line = next((line for line in result.stdout.splitlines() if line.strip().startswith(kind)), None)
        assert line is not None, kind
        assert len(re.findall(NUMBER, line)) == 7, line  # client p50/p95 twice, server p50/p95, matches


def test_dicomweb_benchmark_prints_both_protocols_and_the_ratios(orthanc):
    """Our archive and Orthanc, on a profile's pool instances: every operation's rate, the ratios, the queries."""
    result = run_module(
        "bench.benchmarks.dicomweb_vs_dimse",
        *("--studies", "1", "--per-study", "2", "--rounds", "1", "--queries", "2", "--index-instances", "2000"),
        *("--profile", "tiny", "--orthanc", "--settle", "0"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for archive in ("archive", "Orthanc"):
        for operation in ("C-STORE", "STOW-RS", "C-GET", "WADO-RS"):
            line = rf"^  {archive} +{operation} +{NUMBER} inst/s \({NUMBER}-{NUMBER}\) +{NUMBER} MB/s"
            assert re.search(line, result.stdout, re.M), (archive, operation)
    for ratio in ("archive STOW-RS / C-STORE", "archive WADO-RS / C-GET", "STOW-RS archive / Orthanc"):
        assert re.search(rf"{re.escape(ratio)} +{NUMBER}x \({NUMBER}-{NUMBER}\)", result.stdout), ratio
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("PatientID"))
    assert len(re.findall(NUMBER, line)) == 5, line  # C-FIND p50/p95, QIDO-RS p50/p95, their p95 ratio


def test_web_cost_benchmark_alternates_runs_with_and_without_the_web_ui():
    result = run_module("bench.benchmarks.web_cost", "--duration", "2", "--pairs", "1", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf"^pair 1 plain: {NUMBER} instances/s, load CPU {NUMBER} s", result.stdout, re.M), result.stdout
    assert re.search(rf"^pair 1 web  : {NUMBER} instances/s, load CPU {NUMBER} s", result.stdout, re.M)
    assert re.search(rf"^web/plain median ratio: {NUMBER}$", result.stdout, re.M), result.stdout


def test_ingest_benchmark_sends_a_profiles_instances_with_fresh_uids(tmp_path):
    """--profile NAME: each round's files are copies of the profile's pool instances, never the same UIDs twice."""
    from pydicom import dcmread

    from bench.benchmarks.archive_ingest import Instances

    source = Instances("tiny")
    first = source.write(tmp_path / "round-0", 5)
    second = source.write(tmp_path / "round-1", 5)
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in first + second]
    assert len(set(uids)) == 10
    assert source.mean_bytes > 0 and "tiny" in source.label


def test_ingest_benchmark_refuses_an_unknown_profile_in_one_line(dcmtk, tmp_path):
    dcmtk.require("storescu", "storescp")
    work = str(tmp_path / "w")
    result = run_module("bench.benchmarks.archive_ingest", "--profile", "no-such-profile", "--work", work)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "unknown profile 'no-such-profile'" in result.stderr
    assert not (tmp_path / "w").exists()
