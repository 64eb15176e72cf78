"""The disk plan's store rate: a matching calibration's ceiling (run.json's CalibrationRecord), else the assumption."""

from __future__ import annotations

from pathlib import Path

from bench.results.run_record import CalibrationRecord
from bench.runs.disk import store_rate
from bench.scenario.file import load_scenario

SMOKE = Path(__file__).resolve().parents[2] / "scenarios" / "smoke.toml"
POOL = {"bytes": 8_000_000, "studies": 2, "instances": 8}


def pools(scenario) -> dict[str, dict]:
    return {scenario.studies.profile: POOL}


def test_a_matching_calibration_sets_the_flat_out_store_rate():
    calibration = CalibrationRecord(matched=True, ceiling_instances_per_s=50.0, ceiling_mb_per_s=123.0)
    scenario = load_scenario(SMOKE)
    rate, basis = store_rate(scenario, pools(scenario), calibration, 1)
    assert rate == 123e6 and "calibrated ceiling of 123 MB/s" in basis


def test_an_unmatched_calibration_leaves_the_assumed_rate():
    unmatched = CalibrationRecord(matched=False, note="no matching calibration")
    scenario = load_scenario(SMOKE)
    _, basis = store_rate(scenario, pools(scenario), unmatched, 1)
    assert "assumed" in basis
