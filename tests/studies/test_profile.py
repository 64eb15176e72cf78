import pytest

from bench.common.errors import UserError
from bench.studies.generate import plan_studies
from bench.studies.profile import available_profiles, load_profile


def test_shipped_profiles_load():
    assert {"tiny", "dsa-unit", "legacy512", "max150"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).name == name


def test_unknown_profile_is_one_clear_line():
    with pytest.raises(UserError) as err:
        load_profile("dsa-unti")
    message = str(err.value)
    assert "unknown profile 'dsa-unti'" in message and "dsa-unit" in message and "\n" not in message


def test_profile_with_bad_field_names_file_and_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text(
        "rows = 256\ncolumns = 256\nbits_stored = 40\nframe_rate = 4\n"
        "runs_per_study = {min = 1, max = 2}\nframes_per_run = {min = 4, max = 5}\n"
    )
    with pytest.raises(UserError) as err:
        load_profile(str(bad))
    assert str(bad) in str(err.value) and "bits_stored" in str(err.value)


def test_profile_typo_suggests_the_key(tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text("rows = 256\ncolums = 256\n")
    with pytest.raises(UserError, match="colums: unknown key \\(did you mean 'columns'\\?\\)"):
        load_profile(str(bad))


def _mean_study_mb(profile_name: str, studies: int = 200) -> float:
    """Mean pixel bytes per study over planned studies (a plan only: no pixels synthesized)."""
    plans = plan_studies(load_profile(profile_name), seed=1, count=studies)
    return sum(r.shape.frames * r.shape.frame_bytes for p in plans for r in p.runs) / studies / 1e6


def test_dsa_unit_studies_average_about_30_mb():
    """The paper's DSA unit: mean study size within 20% of 30 MB over 200 studies."""
    assert 24 <= _mean_study_mb("dsa-unit") <= 36


def test_max150_studies_average_about_150_mb():
    assert 120 <= _mean_study_mb("max150") <= 180


def test_study_sizes_scatter_around_the_mean():
    plans = plan_studies(load_profile("dsa-unit"), seed=2, count=200)
    frames = sorted(p.frames for p in plans)
    assert frames[0] < frames[100] / 2 and frames[-1] > frames[100] * 2  # a wide spread, not a constant


def test_patients_have_several_studies_on_later_dates():
    plans = plan_studies(load_profile("dsa-unit"), seed=1, count=200)
    by_patient = {}
    for plan in plans:
        by_patient.setdefault(plan.keys.patient_id, []).append(plan.keys)
    repeat = [studies for studies in by_patient.values() if len(studies) > 1]
    assert len(repeat) >= 20 and len(by_patient) < len(plans)
    for studies in repeat:
        assert len({(s.patient_name, s.birth_date, s.sex) for s in studies}) == 1
        assert [s.study_date for s in studies] == sorted(s.study_date for s in studies)
        assert len({s.study_uid for s in studies}) == len(studies)


def _profile_file(tmp_path, extra: str):
    path = tmp_path / "p.toml"
    path.write_text(
        "rows = 64\ncolumns = 64\nbits_stored = 8\nframe_rate = 4\n"
        f"runs_per_study = {{min = 1, max = 1}}\nframes_per_run = {{min = 4, max = 5}}\n{extra}\n"
    )
    return path


def test_profile_with_unknown_transfer_syntax_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError) as err:
        load_profile(str(_profile_file(tmp_path, 'transfer_syntax = "jpeg2000"')))
    message = str(err.value)
    assert "transfer_syntax" in message and "'j2k'" in message and "jpeg2000" in message and "\n" not in message


def test_profile_mean_outside_its_range_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"\[studies_per_patient\]: mean \(9\) is outside min..max \(1..3\)"):
        load_profile(str(_profile_file(tmp_path, "studies_per_patient = {min = 1, max = 3, mean = 9}")))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("frames_per_run = {min = 5, max = 2}", "[frames_per_run]: max (2) is smaller than min (5)"),
        ("frames_per_run = {min = 2, max = 3}", "frames_per_run.min must exceed mask_frames"),
    ],
)
def test_profile_consistency_errors(tmp_path, text, expected):
    path = tmp_path / "p.toml"
    path.write_text(
        f"rows = 64\ncolumns = 64\nbits_stored = 8\nframe_rate = 4\nruns_per_study = {{min = 1, max = 1}}\n{text}\n"
    )
    with pytest.raises(UserError) as err:
        load_profile(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value)
