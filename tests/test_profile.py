import pytest

from bench.errors import UserError
from bench.generate import plan_study
from bench.profile import available_profiles, load_profile


def test_shipped_profiles_load():
    assert {"tiny", "dsa-unit"} <= set(available_profiles())
    for name in available_profiles():
        assert load_profile(name).name == name


def test_unknown_profile_is_one_clear_line():
    with pytest.raises(UserError) as err:
        load_profile("dsa-unti")
    message = str(err.value)
    assert "unknown profile 'dsa-unti'" in message and "dsa-unit" in message and "\n" not in message


def test_profile_with_bad_field_names_file_and_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('rows = 256\ncolumns = 256\nbits_stored = 40\nframe_rate = 4\n'
                   'runs_per_study = {min = 1, max = 2}\nframes_per_run = {min = 4, max = 5}\n')
    with pytest.raises(UserError) as err:
        load_profile(str(bad))
    assert str(bad) in str(err.value) and "bits_stored" in str(err.value)


def test_profile_typo_suggests_the_key(tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text('rows = 256\ncolums = 256\n')
    with pytest.raises(UserError, match="colums: unknown key \\(did you mean 'columns'\\?\\)"):
        load_profile(str(bad))


def test_dsa_unit_studies_average_about_30_mb():
    """The paper's DSA unit: mean study size within 20% of 30 MB over 200 studies."""
    profile = load_profile("dsa-unit")
    sizes = []
    for index in range(200):
        plan = plan_study(profile, seed=1, index=index)
        sizes.append(sum(r.shape.frames * r.shape.frame_bytes for r in plan.runs))
    mean_mb = sum(sizes) / len(sizes) / 1e6
    assert 24 <= mean_mb <= 36, mean_mb


@pytest.mark.parametrize(
    "text, expected",
    [
        ("frames_per_run = {min = 5, max = 2}", "[frames_per_run]: max (2) is smaller than min (5)"),
        ("frames_per_run = {min = 2, max = 3}", "frames_per_run.min must exceed mask_frames"),
    ],
)
def test_profile_consistency_errors(tmp_path, text, expected):
    path = tmp_path / "p.toml"
    path.write_text(f"rows = 64\ncolumns = 64\nbits_stored = 8\nframe_rate = 4\nruns_per_study = {{min = 1, max = 1}}\n{text}\n")
    with pytest.raises(UserError) as err:
        load_profile(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value)
