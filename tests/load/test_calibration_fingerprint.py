"""Calibration fingerprints and the retrieval ceiling: a real calibration (real null sink and null source,
the harness's real store and retrieve paths) judged against runs, through the real report."""

import json

import pytest
from synthetic import write_run

from bench.load.calibrate import calibrate, ceiling_for_run, load_calibrations, save_calibration
from bench.report.page import build_report

PROFILE = "tiny"


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One short real calibration of the tiny profile, in a state folder of its own."""
    cache = tmp_path_factory.mktemp("calibration-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PACSBENCH_STATE", str(cache))
        entry = calibrate(PROFILE, None, 20, "python", with_storescu=False, progress=False)
    return cache, entry


@pytest.fixture
def cache(calibrated, monkeypatch):
    monkeypatch.setenv("PACSBENCH_STATE", str(calibrated[0]))
    return calibrated[0]


def _report(folder, calibration, run_extra=None, **run):
    run_dir = write_run(folder, rate=50, seconds=6, run_extra={"calibration": calibration, **(run_extra or {})}, **run)
    build_report(run_dir)
    return json.loads((run_dir / "summary.json").read_text())


def test_a_calibration_carries_its_fingerprint_and_both_ceilings(calibrated):
    _, entry = calibrated
    print_ = entry["fingerprint"]
    assert print_["profile"] == PROFILE and print_["transfer_syntax"] == entry["transfer_syntax"]
    assert print_["load_processes"] == 1
    assert {"cpu_model", "cpus", "memory_bytes", "kernel", "hypervisor", "container"} <= set(print_["host"])
    assert print_["host"]["cpus"] >= 1 and print_["host"]["memory_bytes"] > 0
    for method in ("get", "move"):
        rates = entry["retrieve"][method]
        assert rates["instances"] >= 20 and rates["failures"] == 0 and rates["instances_per_s"] > 0


def test_a_run_with_the_same_fingerprint_is_judged_against_the_ceiling(cache, calibrated, tmp_path):
    _, entry = calibrated
    calibration = ceiling_for_run(PROFILE, entry["transfer_syntax"], 1)
    assert calibration.matched is True
    assert calibration.ceiling_instances_per_s == entry["instances_per_s"]
    assert calibration.retrieve_get_ceiling_instances_per_s == entry["retrieve"]["get"]["instances_per_s"]
    # The ceiling scaled so that 50 instances/s is above 80% of it: the matching calibration flags the run.
    flagged = calibration.model_copy(update={"ceiling_instances_per_s": 55.0})
    summary = _report(tmp_path / "matched", flagged)
    assert summary["calibration"]["client_bound"] is True


def test_another_profile_gives_no_client_bound_verdict(cache, calibrated, tmp_path):
    calibration = ceiling_for_run("dsa-unit", calibrated[1]["transfer_syntax"], 1)
    assert calibration.matched is False and calibration.ceiling_instances_per_s is None
    assert calibration.note.startswith("no matching calibration (host/profile/syntax differ: profile 'tiny' vs")
    summary = _report(tmp_path / "other-profile", calibration)
    assert summary["calibration"]["client_bound"] is None
    assert "no matching calibration" in summary["calibration"]["note"]
    assert summary["bound_by"]["limit"] != "client"


def test_a_calibration_from_another_host_is_not_used(cache, calibrated, tmp_path):
    # The real entry as another machine would have written it: only its CPU model differs.
    entry = next(iter(load_calibrations()["entries"].values()))
    elsewhere = json.loads(json.dumps(entry))
    elsewhere["fingerprint"]["host"]["cpu_model"] = "Another CPU"
    (cache / "calibration.json").unlink()
    save_calibration(elsewhere)
    try:
        calibration = ceiling_for_run(PROFILE, entry["transfer_syntax"], 1)
    finally:
        save_calibration(entry)
    assert calibration.matched is False
    assert "host cpu_model 'Another CPU' vs" in calibration.note


def test_more_load_processes_than_cores_do_not_match(cache, calibrated):
    cores = calibrated[1]["fingerprint"]["host"]["cpus"]
    calibration = ceiling_for_run(PROFILE, calibrated[1]["transfer_syntax"], cores + 1)
    assert calibration.matched is False and f"{cores + 1} load processes on {cores} cores" in calibration.note


def test_retrieval_is_judged_against_the_retrieval_ceiling(cache, calibrated, tmp_path):
    calibration = ceiling_for_run(PROFILE, calibrated[1]["transfer_syntax"], 1)
    scenario = {
        "name": "synthetic",
        "load": {"users": 4, "duration": 6},
        "users": {"workstation": {"count": 2, "retrieve": "get"}},
    }
    # 40 C-GET instances/s against a C-GET ceiling of 45: above 80%, so the retrieval is client-bound;
    # the ingest ceiling stays the measured one (far above 50/s), so ingest is not.
    tight = calibration.model_copy(update={"retrieve_get_ceiling_instances_per_s": 45.0})
    summary = _report(tmp_path / "retrieved", tight, {"scenario": scenario}, get_rate=40)
    run = json.loads((tmp_path / "retrieved" / "run.json").read_text())
    assert run["calibration"]["retrieve_get_ceiling_instances_per_s"] == 45.0
    assert summary["calibration"]["client_bound"] is False
    retrieval = summary["retrieve_calibration"]
    assert retrieval["method"] == "get" and retrieval["client_bound"] is True
    assert retrieval["note"].startswith("retrieval (C-GET): CLIENT-BOUND")
    assert summary["bound_by"]["limit"] == "client"


def test_a_calibration_from_before_fingerprints_is_never_used_and_the_note_says_how_to_measure(tmp_path, monkeypatch):
    monkeypatch.setenv("PACSBENCH_STATE", str(tmp_path))
    (tmp_path / "calibration.json").write_text(
        json.dumps({"entries": {"instance2mb/explicit": {"instances_per_s": 500.0, "mb_per_s": 900.0}}})
    )
    calibration = ceiling_for_run(PROFILE, "explicit", 1)
    assert calibration.matched is False and calibration.ceiling_instances_per_s is None
    assert calibration.note == (
        "no matching calibration (the cached ones have no fingerprint; "
        f"`pacsbench calibrate --profile {PROFILE}` measures one)"
    )


def test_calibrations_are_user_state_kept_apart_from_the_cache(calibrated, tmp_path, monkeypatch):
    """The cache (study pools, guest image) can be shared or wiped without a calibration going with it."""
    _, entry = calibrated
    monkeypatch.setenv("PACSBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PACSBENCH_STATE", str(tmp_path / "state"))
    assert save_calibration(entry) == tmp_path / "state" / "calibration.json"
    assert not (tmp_path / "cache").exists()
    assert ceiling_for_run(PROFILE, entry["transfer_syntax"], 1).matched is True


def test_a_test_starts_without_the_calibrations_of_the_user_or_of_other_tests(calibrated):
    """tests/conftest.py gives each test a state folder of its own: this module's calibration is not in it."""
    assert load_calibrations() == {"entries": {}}
    assert ceiling_for_run(PROFILE, calibrated[1]["transfer_syntax"], 1) is None
