"""The reference archive against real peers: DCMTK's storescu/echoscu and pynetdicom."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import psutil
import pytest
from helpers.archive import PACSBENCH_SERVE, start_archive, wait_for_echo
from helpers.dicomfiles import received_bytes
from helpers.tools import require_tool
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification, XRayAngiographicImageStorage

from server_under_test import __version__
from server_under_test.ready import NotReady, Ready, wait_for_ready, write_ready

NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def _indexed(archive) -> dict[str, str]:
    with sqlite3.connect(archive.index) as db:
        return dict(db.execute("SELECT sop_uid, path FROM instance"))


def _associate(archive, calling="TESTSCU"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(XRayAngiographicImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title)
    assert assoc.is_established
    return assoc


def test_dcmtk_echoscu_gets_an_answer(archive):
    echoscu = require_tool("/usr/bin/echoscu", "dcmtk")
    result = subprocess.run(
        [echoscu, "-aec", archive.ae_title, "127.0.0.1", str(archive.port)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_dcmtk_storescu_stores_a_study_and_the_index_holds_it(archive, tiny_studies):
    storescu = require_tool("/usr/bin/storescu", "dcmtk")
    files = sorted((tiny_studies / "study-0000").glob("*.dcm"))
    result = subprocess.run(
        [storescu, "-aec", archive.ae_title, "127.0.0.1", str(archive.port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        env=NODELAY,
    )
    assert result.returncode == 0, result.stderr
    indexed = _indexed(archive)
    for source in files:
        sent = dcmread(source)
        assert sent.SOPInstanceUID in indexed
        stored = dcmread(indexed[sent.SOPInstanceUID])
        assert stored.PixelData == sent.PixelData and stored.StudyInstanceUID == sent.StudyInstanceUID
    with sqlite3.connect(archive.index) as db:
        (study_count,) = db.execute("SELECT COUNT(*) FROM study").fetchone()
        (frames,) = db.execute("SELECT SUM(frames) FROM instance").fetchone()
    assert study_count == 1 and frames == sum(int(dcmread(f).NumberOfFrames) for f in files)


def _dataset_bytes(file_bytes: bytes) -> bytes:
    """The bytes after the file meta group (0002,0000 gives its length)."""
    assert file_bytes[128:132] == b"DICM" and file_bytes[132:136] == b"\x02\x00\x00\x00"
    meta_length = int.from_bytes(file_bytes[140:144], "little")
    return file_bytes[144 + meta_length :]


def test_pacsbench_serve_takes_a_store_from_dcmtk(tmp_path, tiny_studies):
    storescu = require_tool("/usr/bin/storescu", "dcmtk")
    running = start_archive(tmp_path / "served", ae_title="MYARCHIVE", command=PACSBENCH_SERVE)
    try:
        source = sorted(tiny_studies.rglob("*.dcm"))[0]
        result = subprocess.run(
            [storescu, "-aec", "MYARCHIVE", "127.0.0.1", str(running.port), str(source)],
            capture_output=True,
            text=True,
            timeout=60,
            env=NODELAY,
        )
        assert result.returncode == 0, result.stderr
        assert dcmread(source).SOPInstanceUID in _indexed(running)
    finally:
        assert running.stop() == 0


def test_stored_file_holds_the_dataset_bytes_as_sent(archive, tiny_studies):
    source = sorted(tiny_studies.rglob("*.dcm"))[0]
    sent = dcmread(source)
    assoc = _associate(archive)
    try:
        assert assoc.send_c_store(sent).Status == 0
    finally:
        assoc.release()
    stored_path = Path(_indexed(archive)[sent.SOPInstanceUID])
    received = received_bytes(stored_path)
    assert _dataset_bytes(received) == _dataset_bytes(source.read_bytes())
    on_disk = stored_path.read_bytes()
    assert on_disk[: len(received)] == received
    if len(received) % 4096:  # then a trailing padding element follows, to whole 4 KB blocks (storage.files)
        assert len(on_disk) % 4096 == 0 and list(dcmread(stored_path).keys())[-1] == 0xFFFCFFFC
    else:
        assert on_disk == received


def _xa_dataset(sop_uid="1.2.3.4.5", study_uid="1.2.3.1", series_uid="1.2.3.2") -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = XRayAngiographicImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "P"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_a_uid_that_would_escape_the_storage_folder_is_refused(archive):
    assoc = _associate(archive)
    try:
        status = assoc.send_c_store(_xa_dataset(study_uid="../../../tmp")).Status
        ok = assoc.send_c_store(_xa_dataset(sop_uid="1.2.3.4.6")).Status  # the server keeps serving
    finally:
        assoc.release()
    assert status == 0xA900 and ok == 0
    assert set(_indexed(archive)) == {"1.2.3.4.6"}
    assert not list(archive.data.parent.rglob("tmp*.dcm"))


def test_a_dataset_that_does_not_parse_gets_c210_and_no_file(archive, tmp_path):
    good = BytesIO()
    ds = _xa_dataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(good, enforce_file_format=True)
    raw = good.getvalue()
    body_at = raw.index(b"\x08\x00\x16\x00")  # (0008,0016) SOP Class UID: first dataset element
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(raw[:body_at] + b"\x08\x00\x16\x00UI\xff\x7fgarbage")  # length runs past the end
    assoc = _associate(archive)
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    try:
        status = assoc.send_c_store(bad).Status
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()
    assert status == 0xC210
    assert _indexed(archive) == {}
    assert not list((archive.data / "storage").rglob("*.dcm"))


def test_sigterm_stops_the_server_cleanly(tmp_path):
    running = start_archive(tmp_path / "a")
    assert running.stop() == 0


def test_port_in_use_is_one_clear_line(archive, tmp_path):
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "server_under_test", "--port", str(archive.port), "--data", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr and result.stderr.strip().count("\n") == 0


def _listening(port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in psutil.net_connections("tcp"))


def test_a_killed_supervisor_frees_its_port_and_a_new_archive_starts_on_it(tmp_path, unused_port):
    # kill -9 of the PID `pacsbench serve` started, as an OOM kill or an impatient operator does:
    # the supervisor alone gets the signal; its forked workers must not keep the port.
    first = start_archive(tmp_path / "first", "--port", str(unused_port), "--workers", "2", command=PACSBENCH_SERVE)
    wait_for_echo(first.port, first.ae_title)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    deadline = time.monotonic() + 2.0
    while _listening(unused_port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _listening(unused_port)
    second = start_archive(tmp_path / "second", "--port", str(unused_port), command=PACSBENCH_SERVE)
    try:
        wait_for_echo(second.port, second.ae_title)
    finally:
        second.stop()


def _ready_archive(tmp_path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server_under_test",
            "--port",
            "0",
            "--data",
            str(tmp_path / "data"),
            "--ready-file",
            str(tmp_path / "ready.json"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_the_ready_file_names_the_port_and_status_page_and_goes_when_the_archive_exits(tmp_path):
    stale = Ready(pid=1, version="0", ae_title="OLD", host="127.0.0.1", port=1, metrics_url=None, data="", workers=1)
    write_ready(tmp_path / "ready.json", stale)  # an earlier archive's, killed: never taken for the new one's
    process = _ready_archive(tmp_path, "--aet", "READYSCP", "--workers", "2", "--metrics-port", "0")
    try:
        ready = wait_for_ready(tmp_path / "ready.json", process, 60)
        assoc = AE(ae_title="TESTSCU")
        assoc.add_requested_context(Verification)
        echo = assoc.associate(ready.host, ready.port, ae_title=ready.ae_title)
        assert echo.is_established and echo.send_c_echo().Status == 0
        echo.release()
        with urllib.request.urlopen(f"{ready.metrics_url}/status", timeout=10) as answer:
            status = json.load(answer)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert (ready.pid, ready.version, ready.ae_title, ready.workers) == (process.pid, __version__, "READYSCP", 2)
    assert (status["port"], len(status["workers"]), ready.data) == (ready.port, 2, str(tmp_path / "data"))
    assert process.returncode == 0 and not (tmp_path / "ready.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary file left either


def test_waiting_for_an_archive_that_dies_says_so_in_one_line(tmp_path):
    (tmp_path / "data").write_text("a file where the data folder goes")
    process = _ready_archive(tmp_path)
    with pytest.raises(NotReady, match=r"^the archive exited with code 2 before it was ready$"):
        wait_for_ready(tmp_path / "ready.json", process, 60)
    process.stderr.close()
    assert not (tmp_path / "ready.json").exists()
