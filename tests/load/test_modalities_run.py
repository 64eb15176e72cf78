"""A department-day-like run in seconds: several modalities with their own profiles in one run against the
reference archive, one of them checking that its study becomes queryable and moving it back; verified, and
reported per modality and per study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT

from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile

pytestmark = pytest.mark.slow

DAY = """
name = "day"
[target]
kind = "native"
fsync = false
[studies]
profile = "ct"
pool = 1
prefill = 1
scale = 0.003
[load]
duration = 6
stop_timeout = 30
[users.modalities.ct]
profile = "ct"
count = 1
instances_per_s = 20
[users.modalities.mr]
profile = "mr"
count = 1
instances_per_s = 20
[users.modalities.us]
profile = "us"
count = 1
studies_per_hour = 3600
[users.modalities.petct]
profile = "pet-ct-large"
count = 1
studies = 1
check_queryable = true
move_after = true
[users.workstation]
count = 1
retrieve = "move"
reading_images_per_s = 200
check_digests = true
"""


@pytest.fixture(scope="module")
def day_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("day")
    (folder / "day.toml").write_text(DAY)
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(folder / "day.toml"), "--results", str(folder / "r")]
        + ["--no-progress", "--verify"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    report = subprocess.run(
        [sys.executable, "-m", "bench.cli", "report", str(run_dir)], capture_output=True, text=True, cwd=ROOT
    )
    assert report.returncode == 0, report.stderr
    return run_dir


def test_every_modality_stores_its_own_studies_and_all_come_back_equal(day_run):
    record = json.loads((day_run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["verify"]["ok"] and record["verify"]["missing"] == record["verify"]["different"] == 0
    assert set(record["modality_studies"]) == {"mr", "us", "pet-ct-large"}
    samples = pd.read_csv(day_run / "samples.csv", dtype={"modality": str, "error": str}).fillna(
        {"modality": "", "error": ""}
    )
    assert (samples["error"] == "").all(), samples[samples["error"] != ""]["error"].tolist()[:3]
    stored = set(samples[samples["operation"] == "C-STORE"]["modality"])
    assert stored == {"CT", "MR", "US", "CT\\PT"}


def test_the_checked_study_is_queryable_whole_and_moved_back_whole(day_run):
    samples = pd.read_csv(day_run / "samples.csv", dtype={"modality": str, "study_instance_uid": str, "error": str})
    samples = samples.fillna({"modality": "", "error": ""})
    pet = samples[samples["modality"] == "CT\\PT"]
    stores = pet[pet["operation"] == "C-STORE"]
    expected = len(StudyPool.prepare(load_profile("pet-ct-large").scaled(0.003), 1, 1, progress=False).studies[0])
    assert len(stores) == expected and stores["study_instance_uid"].nunique() == 1
    queryable = pet[pet["operation"] == "QUERYABLE"]
    assert len(queryable) == 1 and queryable["error"].iloc[0] == ""
    assert queryable["start"].iloc[0] >= (stores["start"] + stores["latency_ms"] / 1000).max() - 1e-3
    moved = pet[(pet["operation"] == "C-MOVE") & (pet["user_type"] == "modality")]
    assert moved["instances"].tolist() == [expected] and moved["bytes"].iloc[0] == stores["bytes"].sum()


def test_the_report_gives_figures_per_modality_and_per_study(day_run):
    summary = json.loads((day_run / "summary.json").read_text())
    # Over the measured window: the paced modalities store all along (the PET-CT may be done within the warm-up).
    assert {"CT", "MR", "US"} <= set(summary["modalities"])
    assert (
        summary["modalities"]["US"]["C-STORE"]["frames_per_s"]
        > summary["modalities"]["US"]["C-STORE"]["instances_per_s"]
    )
    pet = summary["studies_by_modality"]["CT\\PT"]
    assert pet["studies"] == 1 and pet["queryable_seconds_p50"] is not None
    largest = summary["studies"][0]
    assert largest["modality"] == "CT\\PT" and largest["retrieve_seconds"] is not None
    markdown = (day_run / "summary.md").read_text()
    assert "## Modalities and studies" in markdown and "| US | C-STORE |" in markdown
    assert "| CT\\PT | 1 | " in markdown  # its study, in the per-study table (over the whole run, not the window)
