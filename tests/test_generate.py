import subprocess
import sys

import pytest
from pydicom import dcmread

from bench.errors import UserError
from bench.generate import generate
from bench.profile import load_profile
from bench.xa import XA_SOP_CLASS

from conftest import require_tool


def _datasets(folder):
    return [dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def test_tiny_studies_are_multiframe_xa_one_instance_per_series(tiny_studies):
    studies = sorted(p for p in tiny_studies.iterdir() if p.is_dir())
    assert [p.name for p in studies] == ["study-0000", "study-0001"]
    for study in studies:
        datasets = [dcmread(p) for p in sorted(study.glob("*.dcm"))]
        assert len(datasets) >= 2
        assert len({ds.StudyInstanceUID for ds in datasets}) == 1
        assert len({ds.SeriesInstanceUID for ds in datasets}) == len(datasets)
        for ds in datasets:
            assert ds.SOPClassUID == XA_SOP_CLASS and ds.Modality == "XA"
            assert int(ds.NumberOfFrames) >= 8
            assert ds.pixel_array.shape == (int(ds.NumberOfFrames), 256, 256)


def test_studies_have_unique_uids(tiny_studies):
    datasets = _datasets(tiny_studies)
    assert len({ds.StudyInstanceUID for ds in datasets}) == 2
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)


def test_same_seed_same_bytes_other_seed_other_uids(tmp_path):
    profile = load_profile("tiny")
    generate(profile, 1, 3, tmp_path / "a", progress=False)
    generate(profile, 1, 3, tmp_path / "b", progress=False)
    generate(profile, 1, 4, tmp_path / "c", progress=False)
    a = sorted((tmp_path / "a").rglob("*.dcm"))
    b = sorted((tmp_path / "b").rglob("*.dcm"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    c = _datasets(tmp_path / "c")
    assert {ds.StudyInstanceUID for ds in c}.isdisjoint({ds.StudyInstanceUID for ds in _datasets(tmp_path / "a")})


def test_dciodvfy_reports_no_errors_and_no_warnings(tiny_studies):
    dciodvfy = require_tool("dciodvfy", "dicom3tools")
    for path in sorted(tiny_studies.rglob("*.dcm")):
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        output = result.stdout + result.stderr
        problems = [line for line in output.splitlines() if line.startswith(("Error", "Warning"))]
        assert problems == [], f"{path}: {problems}"


def test_unwritable_output_is_a_clear_error_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create output folder"):
        generate(load_profile("tiny"), 1, 1, blocker / "out", progress=False)


def test_interrupted_generation_leaves_no_partial_study(tmp_path, monkeypatch):
    import bench.generate as gen

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gen.Dataset, "save_as", explode)
    with pytest.raises(UserError, match="No space left on device"):
        generate(load_profile("tiny"), 2, 1, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_generate_prints_totals(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "generate", "--profile", "tiny", "--studies", "1", "--out",
         str(tmp_path), "--no-progress"], capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "1 studies" in result.stdout and "instances" in result.stdout and "MB" in result.stdout


def test_cli_unknown_profile_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "generate", "--profile", "nope", "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown profile 'nope'" in result.stderr
    assert not (tmp_path / "o").exists()
