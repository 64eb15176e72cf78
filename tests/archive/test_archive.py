"""The reference archive against real peers: DCMTK findscu, movescu, getscu and storescp."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from helpers.archive import start_archive, wait_for_echo
from helpers.dicomfiles import dataset_bytes
from pydicom import dcmread

NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def storescu(dcmtk, archive, files, *options: str) -> None:
    tool = dcmtk.storescu
    result = subprocess.run(
        [tool, *options, "-aec", archive.ae_title, "127.0.0.1", str(archive.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env=NODELAY,
    )
    assert result.returncode == 0, result.stderr


def findscu(dcmtk, archive, out: Path, model: str, *keys: str) -> list:
    tool = dcmtk.findscu
    out.mkdir(parents=True, exist_ok=True)
    args = [tool, model, "-aec", archive.ae_title, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run([*args, "127.0.0.1", str(archive.port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def stored_study(dcmtk, tmp_path, tiny_studies):
    """An archive on a random port with tiny study-0000 stored by DCMTK's storescu."""
    config = tmp_path / "archive.toml"
    config.write_text('[destinations.DEST]\nhost = "127.0.0.1"\nport = 1\n')
    running = start_archive(tmp_path / "archive", "--config", str(config))
    files = sorted((tiny_studies / "study-0000").glob("*.dcm"))
    storescu(dcmtk, running, files)
    yield running, files
    running.stop()


def test_find_at_every_level_with_counts(dcmtk, stored_study, tmp_path):
    archive, files = stored_study
    first = dcmread(files[0])
    patients = findscu(
        dcmtk,
        archive,
        tmp_path / "p",
        "-P",
        "QueryRetrieveLevel=PATIENT",
        f"PatientID={first.PatientID}",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
    )
    assert len(patients) == 1 and patients[0].PatientName == first.PatientName
    assert int(patients[0].NumberOfPatientRelatedInstances) == len(files)
    studies = findscu(
        dcmtk,
        archive,
        tmp_path / "s",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyInstanceUID",
        f"PatientName={str(first.PatientName)[:4]}*",
        f"StudyDate={first.StudyDate}-",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
    )
    assert [s.StudyInstanceUID for s in studies] == [first.StudyInstanceUID]
    assert int(studies[0].NumberOfStudyRelatedInstances) == len(files)
    assert int(studies[0].NumberOfStudyRelatedSeries) == len(files) and studies[0].ModalitiesInStudy == "XA"
    series = findscu(
        dcmtk,
        archive,
        tmp_path / "r",
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={first.StudyInstanceUID}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted(s.SeriesInstanceUID for s in series) == sorted(dcmread(f).SeriesInstanceUID for f in files)
    images = findscu(
        dcmtk,
        archive,
        tmp_path / "i",
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"SeriesInstanceUID={first.SeriesInstanceUID}",
        "SOPInstanceUID",
        "NumberOfFrames",
    )
    assert [i.SOPInstanceUID for i in images] == [first.SOPInstanceUID]
    assert int(images[0].NumberOfFrames) == int(first.NumberOfFrames)
    nothing = findscu(
        dcmtk,
        archive,
        tmp_path / "n",
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyDate=19000101-19001231",
        "StudyInstanceUID",
    )
    assert nothing == []


def test_move_to_a_storescp_delivers_identical_bytes(dcmtk, stored_study, tmp_path, unused_port):
    archive, files = stored_study
    storescp = dcmtk.storescp
    movescu = dcmtk.movescu
    received = tmp_path / "received"
    received.mkdir()
    config = archive.data.parent / "archive.toml"
    # Restart the archive with the real destination port in its AE table.
    archive.stop()
    config.write_text(f'[destinations.DEST]\nhost = "127.0.0.1"\nport = {unused_port}\n')
    restarted = start_archive(archive.data, "--config", str(config))
    sink = subprocess.Popen([storescp, "+B", "-aet", "DEST", "-od", str(received), str(unused_port)], env=NODELAY)
    try:
        wait_for_echo(unused_port, "DEST")
        study_uid = dcmread(files[0]).StudyInstanceUID
        result = subprocess.run(
            [
                movescu,
                "-S",
                "-aec",
                restarted.ae_title,
                "-aem",
                "DEST",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study_uid}",
                "127.0.0.1",
                str(restarted.port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=NODELAY,
        )
        assert result.returncode == 0, result.stderr
    finally:
        sink.terminate()
        sink.wait(10)
        restarted.stop()
    got = {dcmread(p).SOPInstanceUID: dataset_bytes(p) for p in received.iterdir()}
    assert got == {dcmread(f).SOPInstanceUID: dataset_bytes(f) for f in files}


def test_get_returns_identical_bytes(dcmtk, stored_study, tmp_path):
    archive, files = stored_study
    out = tmp_path / "got"
    out.mkdir()
    study_uid = dcmread(files[0]).StudyInstanceUID
    result = dcmtk.get_study(archive, study_uid, out)
    assert result.returncode == 0, result.stderr
    got = {dcmread(p).SOPInstanceUID: dataset_bytes(p) for p in out.iterdir()}
    assert got == {dcmread(f).SOPInstanceUID: dataset_bytes(f) for f in files}


def test_move_to_an_unknown_destination_fails_cleanly(dcmtk, stored_study):
    archive, files = stored_study
    movescu = dcmtk.movescu
    result = subprocess.run(
        [
            movescu,
            "-S",
            "-aec",
            archive.ae_title,
            "-aem",
            "NOBODY",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={dcmread(files[0]).StudyInstanceUID}",
            "127.0.0.1",
            str(archive.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "MoveDestinationUnknown" in result.stderr
    with sqlite3.connect(archive.index) as db:
        assert db.execute("SELECT COUNT(*) FROM instance").fetchone()[0] == len(files)


def test_get_decompresses_for_a_peer_that_takes_only_uncompressed(dcmtk, tmp_path, tiny_studies):
    """Stored as sent (JPEG-LS), retrieved by DCMTK getscu, which proposes only uncompressed syntaxes."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

    source = dcmread(sorted((tiny_studies / "study-0000").glob("*.dcm"))[0])
    original_pixels = source.pixel_array.copy()
    source.compress(JPEGLSLossless, generate_instance_uid=False)
    compressed = tmp_path / "jpegls.dcm"
    source.save_as(compressed, enforce_file_format=True)
    archive = start_archive(tmp_path / "archive")
    try:
        storescu(dcmtk, archive, [compressed], "-xt")  # propose JPEG-LS lossless
        with sqlite3.connect(archive.index) as db:
            assert db.execute("SELECT transfer_syntax FROM instance").fetchone()[0] == JPEGLSLossless  # as sent
        out = tmp_path / "got"
        out.mkdir()
        result = dcmtk.get_study(archive, source.StudyInstanceUID, out)
    finally:
        archive.stop()
    assert result.returncode == 0, result.stderr
    [received] = [dcmread(p) for p in out.iterdir()]
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == source.SOPInstanceUID
    assert (received.pixel_array == original_pixels).all()
