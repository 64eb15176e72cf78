import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import XRayAngiographicImageStorage

from bench.common.errors import UserError
from bench.studies.encode import SYNTAXES
from bench.studies.generate import generate
from bench.studies.profile import PROFILE_DIR, load_profile


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
            assert ds.SOPClassUID == XRayAngiographicImageStorage and ds.Modality == "XA"
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


def test_dciodvfy_reports_no_errors_and_no_warnings(dciodvfy, tiny_studies):
    for path in sorted(tiny_studies.rglob("*.dcm")):
        assert dciodvfy.problems(path) == [], path


def test_unwritable_output_is_a_clear_error_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot create output folder"):
        generate(load_profile("tiny"), 1, 1, blocker / "out", progress=False)


def test_interrupted_generation_leaves_no_partial_study(tmp_path, monkeypatch):
    import bench.studies.generate as gen

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gen.Dataset, "save_as", explode)
    with pytest.raises(UserError, match="No space left on device"):
        generate(load_profile("tiny"), 2, 1, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_generate_prints_totals(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "generate",
            "--profile",
            "tiny",
            "--studies",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "1 studies" in result.stdout and "instances" in result.stdout and "MB" in result.stdout


def test_cli_unknown_profile_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "generate", "--profile", "nope", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown profile 'nope'" in result.stderr
    assert not (tmp_path / "o").exists()


def _generate_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", "generate", "--no-progress", *args], capture_output=True, text=True, env=env
    )


def test_cli_generate_in_a_transfer_syntax_prints_totals(tmp_path):
    result = _generate_cli(
        "--profile", "tiny", "--studies", "2", "--seed", "5", "--transfer-syntax", "jpeg-ls", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.rglob("*.dcm"))
    frames = sum(int(dcmread(p).NumberOfFrames) for p in files)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    assert f"2 studies, {len(files)} instances, {frames} frames, {megabytes:.1f} MB (jpeg-ls)" in result.stdout
    assert {str(dcmread(p).file_meta.TransferSyntaxUID) for p in files} == {SYNTAXES["jpeg-ls"].uid}


def _one_line_exit_2_and_no_output(result, out, *phrases):
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr
    assert not out.exists()


def test_cli_unknown_transfer_syntax(tmp_path):
    result = _generate_cli("--profile", "tiny", "--transfer-syntax", "jpeg2000", "--out", str(tmp_path / "o"))
    _one_line_exit_2_and_no_output(result, tmp_path / "o", "unknown transfer syntax 'jpeg2000'", "j2k")


def test_cli_without_dcmcjpeg_refuses_sv1_and_writes_nothing(tmp_path):
    """A real machine without DCMTK: PATH holds only the venv's scripts."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    result = _generate_cli("--profile", "tiny", "--transfer-syntax", "jpeg-sv1", "--out", str(tmp_path / "o"), env=env)
    _one_line_exit_2_and_no_output(result, tmp_path / "o", "jpeg-sv1 needs DCMTK's dcmcjpeg", "apt-get install dcmtk")


def test_cli_profile_with_a_bad_field(tmp_path):
    profile = tmp_path / "mine.toml"
    profile.write_text(Path(PROFILE_DIR / "tiny.toml").read_text().replace("dose = 1000.0", "dose = -5"))
    result = _generate_cli("--profile", str(profile), "--out", str(tmp_path / "o"))
    _one_line_exit_2_and_no_output(result, tmp_path / "o", str(profile), "dose")


def test_a_user_profile_with_lin_data_is_dciodvfy_clean(dciodvfy, tmp_path):
    profile = tmp_path / "lin.toml"
    profile.write_text(
        Path(PROFILE_DIR / "tiny.toml")
        .read_text()
        .replace('"LOG"', '"LIN"')
        .replace("frames_per_run = { min = 8, max = 12 }", "frames_per_run = { min = 3, max = 4 }")
    )
    generate(load_profile(str(profile)), 1, 1, tmp_path / "out", progress=False)
    for path in sorted((tmp_path / "out").rglob("*.dcm")):
        ds = dcmread(path)
        assert ds.PixelIntensityRelationship == "LIN" and "ModalityLUTSequence" not in ds
        assert dciodvfy.problems(path) == [], path
