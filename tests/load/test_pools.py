"""The run's study pools (bench.load.pools): a scaled modality profile keeps its name, so a run of a CT scenario is
judged against a CT calibration's ceiling (the fingerprint names the profile), and another profile's does not."""

from bench.load.calibrate import ceiling_for_run, fingerprint, save_calibration
from bench.load.pools import run_profiles, scenario_profile
from bench.scenario.file import load_scenario

SCENARIO = """
[target]
kind = "native"

[studies]
profile = "ct"
scale = 0.01

[load]
duration = 5

[users.modalities.mr]
profile = "mr"
count = 1
"""


def test_a_scaled_ct_scenario_is_judged_against_the_ct_calibration_only(tmp_path):
    path = tmp_path / "ct-day.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    assert run_profiles(scenario) == ["ct", "mr"]
    ct = scenario_profile(scenario, "ct")
    assert (ct.name, ct.scale) == ("ct", 0.01)
    # As `pacsbench calibrate --profile ct` stores it (its fingerprint names the profile, not the scale).
    save_calibration({"fingerprint": fingerprint("ct", "explicit"), "instances_per_s": 600.0, "mb_per_s": 315.0})
    matched = ceiling_for_run(ct.name, ct.transfer_syntax, 1)
    assert matched.matched is True and matched.ceiling_instances_per_s == 600.0
    other = ceiling_for_run(scenario_profile(scenario, "mr").name, "explicit", 1)
    assert other.matched is False and "profile 'ct' vs 'mr'" in other.note
