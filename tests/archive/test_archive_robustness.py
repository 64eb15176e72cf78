"""Durability, tiers, bad input, shutdown and observability of the reference archive."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import pytest
from helpers import ROOT
from helpers.archive import start_archive
from helpers.tools import REQUIRE_TOOLS, require_tool
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
    XRayAngiographicImageStorage,
)

XA = XRayAngiographicImageStorage


def dataset_bytes_of_file(path: Path) -> bytes:
    data = path.read_bytes()
    return data[144 + int.from_bytes(data[140:144], "little"):]


def encoded(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dataset_bytes_of_file_bytes(buffer.getvalue())


def dataset_bytes_of_file_bytes(data: bytes) -> bytes:
    return data[144 + int.from_bytes(data[140:144], "little"):]


def unique_copies(template_files: list[Path], studies: int):
    """Yield (study_uid, dataset) with fresh UIDs: `studies` studies built from the template files."""
    templates = [dcmread(p) for p in template_files]
    for _ in range(studies):
        study_uid = generate_uid()
        for template in templates:
            ds = template.copy()
            ds.file_meta = template.file_meta.copy()
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            yield study_uid, ds


def client(archive, calling="TESTSCU", get_role=False) -> tuple:
    ae = AE(ae_title=calling)
    ae.add_requested_context(XA, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    received = {}

    def on_store(event):
        received[event.request.AffectedSOPInstanceUID] = event.encoded_dataset(include_meta=False)
        return 0x0000

    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title,
                         ext_neg=[build_role(XA, scp_role=True)] if get_role else None,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)] if get_role else None)
    assert assoc.is_established
    return assoc, received


def index_rows(archive) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(archive.index) as db:
        return {sop: (path, tier) for sop, path, tier in db.execute("SELECT sop_uid, path, tier FROM instance")}


def test_kill_9_loses_no_acknowledged_instance(tmp_path, tiny_studies):
    archive = start_archive(tmp_path / "archive")
    acknowledged: dict[str, bytes] = {}
    templates = sorted(tiny_studies.rglob("*.dcm"))

    def store_until_killed():
        assoc, _ = client(archive)
        for _, ds in unique_copies(templates, 200):
            status = assoc.send_c_store(ds)
            if status.get("Status") != 0:
                return
            acknowledged[ds.SOPInstanceUID] = encoded(ds)

    sender = threading.Thread(target=store_until_killed)
    sender.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(archive.process.pid, signal.SIGKILL)  # supervisor and workers, mid-stream
    archive.process.wait()
    sender.join(60)
    assert len(acknowledged) >= 8
    restarted = start_archive(archive.data)
    try:
        rows = index_rows(restarted)
        for sop_uid, sent in acknowledged.items():
            assert sop_uid in rows, f"acknowledged {sop_uid} is not in the index"
            assert dataset_bytes_of_file(Path(rows[sop_uid][0])) == sent
        assert all(Path(path).is_file() for path, _ in rows.values())  # no row without its file
        assert not list((archive.data / "storage").rglob(".tmp-*"))  # leftovers removed at start
    finally:
        restarted.stop()


def test_tiers_migrate_while_storing_querying_and_retrieving(tmp_path, tiny_studies):
    config = tmp_path / "tiers.toml"
    config.write_text(
        "migration_interval = 0.2\nmigration_min_age = 0.3\n"
        # A study here is 3.4 MB: the low watermark (4.8 MB) keeps at least one study on the
        # fast tier after every migration, whatever the timing (at 6 MB it could empty it).
        '[[tiers]]\nname = "fast"\npath = "fast"\ncapacity = "12 MB"\nhigh_watermark = 0.7\nlow_watermark = 0.4\n'
        '[[tiers]]\nname = "slow"\npath = "slow"\n'
    )
    archive = start_archive(tmp_path / "archive", "--config", str(config), "--metrics-port", "0")
    templates = sorted((tiny_studies / "study-0000").glob("*.dcm"))
    sent: dict[str, bytes] = {}
    studies: list[str] = []
    problems: list[str] = []
    storing = threading.Event()
    storing.set()

    def store():
        assoc, _ = client(archive, "MODALITY")
        for study_uid, ds in unique_copies(templates, 10):
            if assoc.send_c_store(ds).get("Status") != 0:
                problems.append(f"store of {ds.SOPInstanceUID} failed")
            sent[ds.SOPInstanceUID] = encoded(ds)
            if study_uid not in studies:
                studies.append(study_uid)
        assoc.release()
        storing.clear()

    def query_and_retrieve():
        assoc, received = client(archive, "READER", get_role=True)
        while storing.is_set() or not received:
            if len(studies) < 2:
                time.sleep(0.05)
                continue
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            answers = [s for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
            if answers[-1].Status != 0:
                problems.append(f"C-FIND ended with 0x{answers[-1].Status:04X}")
            get = Dataset()
            get.QueryRetrieveLevel = "STUDY"
            get.StudyInstanceUID = random.choice(studies[:-1])
            statuses = [s.Status for s, _ in assoc.send_c_get(get, StudyRootQueryRetrieveInformationModelGet)]
            if statuses[-1] != 0:
                problems.append(f"C-GET ended with 0x{statuses[-1]:04X}")
        for sop_uid, data in received.items():
            if data != sent.get(sop_uid):
                problems.append(f"C-GET returned different bytes for {sop_uid}")
        assoc.release()

    threads = [threading.Thread(target=store), threading.Thread(target=query_and_retrieve)]
    [t.start() for t in threads]
    [t.join(180) for t in threads]
    try:
        # Wait until migration has settled: below the high watermark and no move for a second.
        deadline, previous = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            status = json.loads(urllib.request.urlopen(f"{archive.metrics_url}/status", timeout=10).read())
            fast = status["tiers"][0]
            now = (fast["used_bytes"], status["migration"]["studies_moved"])
            if now == previous and fast["used_bytes"] <= 0.7 * fast["capacity_bytes"]:
                break
            previous = now
            time.sleep(1.0)
        assert problems == []
        rows = index_rows(archive)
        assert set(rows) == set(sent)  # nothing lost
        assert {tier for _, tier in rows.values()} == {0, 1}  # some studies moved down
        for sop_uid, (path, tier) in rows.items():
            assert Path(path).is_relative_to(tmp_path / ("fast" if tier == 0 else "slow"))
            assert dataset_bytes_of_file(Path(path)) == sent[sop_uid]
        assert status["migration"]["studies_moved"] > 0 and fast["used_bytes"] <= 0.7 * fast["capacity_bytes"]
        moved_study = next(s for s in studies if any(
            rows[u][1] == 1 for u in sent if dcmread(Path(rows[u][0]), stop_before_pixels=True).StudyInstanceUID == s))
        assoc, received = client(archive, "LATE", get_role=True)
        get = Dataset()
        get.QueryRetrieveLevel = "STUDY"
        get.StudyInstanceUID = moved_study
        assert [s.Status for s, _ in assoc.send_c_get(get, StudyRootQueryRetrieveInformationModelGet)][-1] == 0
        assoc.release()
        assert received and all(sent[u] == data for u, data in received.items())
    finally:
        archive.stop()


def test_unknown_sop_class_is_refused_and_the_server_keeps_serving(archive):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.3.4.5.6.7.8.9")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title)
    try:
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == ["1.2.3.4.5.6.7.8.9"]
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_truncated_pdu_aborts_that_association_only(archive, tiny_studies):
    from server_under_test.upper_layer.association import proposed_context, request

    assoc = request("127.0.0.1", archive.port, "RAW", archive.ae_title, [proposed_context(XA, [ExplicitVRLittleEndian])],
                    0, 10)
    # A P-DATA-TF header that promises 100000 bytes, 10 of them, then the connection closes.
    assoc.wire.send_all([b"\x04\x00" + (100000).to_bytes(4, "big") + b"0123456789"])
    assoc.wire.close()
    time.sleep(0.5)
    echoscu = require_tool("/usr/bin/echoscu", "dcmtk")
    assert subprocess.run([echoscu, "-aec", archive.ae_title, "127.0.0.1", str(archive.port)]).returncode == 0
    assert index_rows(archive) == {}
    assert not [p for p in (archive.data / "storage").rglob("*") if p.is_file()]


def test_calling_ae_not_on_the_allow_list_is_rejected(tmp_path):
    echoscu = require_tool("/usr/bin/echoscu", "dcmtk")
    config = tmp_path / "allow.toml"
    config.write_text('allowed_calling_aets = ["GOODSCU"]\n')
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    try:
        bad = subprocess.run([echoscu, "-aet", "BADSCU", "-aec", "PACSBENCH", "127.0.0.1", str(archive.port)],
                             capture_output=True, text=True)
        good = subprocess.run([echoscu, "-aet", "GOODSCU", "-aec", "PACSBENCH", "127.0.0.1", str(archive.port)])
    finally:
        archive.stop()
    assert bad.returncode != 0 and "Rejected" in bad.stderr and "Calling AE Title Not Recognized" in bad.stderr
    assert good.returncode == 0



@pytest.mark.parametrize("where", ["option", "config"])
def test_check_called_aet_rejects_another_called_ae_title(tmp_path, where):
    (tmp_path / "check.toml").write_text("check_called_aet = true\n")
    setting = ["--check-called-aet"] if where == "option" else ["--config", str(tmp_path / "check.toml")]
    archive = start_archive(tmp_path / "archive", *setting)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(Verification)
    answers = []  # the A-ASSOCIATE primitives pynetdicom receives (its is_rejected can lose a race with the close)
    try:
        wrong = ae.associate("127.0.0.1", archive.port, ae_title="NOT-PACSBENCH",
                             evt_handlers=[(evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))])
        right = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title)
        status = right.send_c_echo().Status if right.is_established else None
        right.release()
    finally:
        archive.stop()
    assert not wrong.is_established
    # PS3.8 9.3.4: rejected-permanent, DICOM UL service-user, called AE title not recognized
    assert [(a.result, a.result_source, a.diagnostic) for a in answers] == [(0x01, 0x01, 0x07)]
    assert status == 0

def mount_tmpfs(mount_point: Path, options: str) -> Path:
    """A small tmpfs: a disk that really fills up (needs root, as CI has)."""
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        message = f"cannot mount a tmpfs to fill: {result.stderr.strip()}"
        if REQUIRE_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return mount_point


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MB tmpfs."""
    mount_point = mount_tmpfs(tmp_path / "tiny-disk", "size=3m")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)])


@pytest.fixture
def no_inodes_left(tmp_path):
    """A tmpfs where not one more file can be created (ENOSPC at open)."""
    mount_point = mount_tmpfs(tmp_path / "no-inodes", "size=3m,nr_inodes=3")
    (mount_point / "taken").write_bytes(b"")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)])


def test_full_disk_gets_a700_and_loses_nothing(tmp_path, tiny_disk, tiny_studies):
    config = tmp_path / "disk.toml"
    config.write_text(f'[[tiers]]\nname = "small"\npath = "{tiny_disk}"\n')
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    statuses = []
    try:
        assoc, _ = client(archive)
        for _, ds in unique_copies(sorted(tiny_studies.rglob("*.dcm")), 3):
            statuses.append((ds.SOPInstanceUID, assoc.send_c_store(ds).Status))
        assert assoc.send_c_echo().Status == 0  # still serving
        assoc.release()
        rows = index_rows(archive)
    finally:
        archive.stop()
    assert 0xA700 in [s for _, s in statuses] and 0 in [s for _, s in statuses]
    assert set(rows) == {uid for uid, s in statuses if s == 0}
    assert all(Path(path).is_file() for path, _ in rows.values())
    assert not list(tiny_disk.rglob(".tmp-*"))


@pytest.mark.parametrize("direct_io", [True, False], ids=["o_direct", "page_cache"])
def test_a_file_system_that_fills_mid_stream_hands_the_file_to_the_next_tier(tmp_path, tiny_disk, direct_io):
    from server_under_test.storage.files import TEMP_PREFIX, FileStore

    first, second = FileStore(tiny_disk, direct_io=direct_io), FileStore(tmp_path / "tier2", direct_io=direct_io)
    data = random.Random(3).randbytes(5 << 20)  # more than the 3 MB tmpfs holds
    incoming = first.incoming(b"HEADER", overflow=[second])
    incoming.write([data[i:i + 100_000] for i in range(0, len(data), 100_000)])
    path = second.path_for("1.2", "1.3", "1.4")
    assert incoming.error is None and incoming.store is second
    assert incoming.commit(path, replace=True) == len(data) + 6
    assert path.read_bytes() == b"HEADER" + data
    assert not list(tiny_disk.rglob(f"{TEMP_PREFIX}*")) and not list(second.root.rglob(f"{TEMP_PREFIX}*"))


def test_a_tier_that_cannot_even_create_the_file_hands_it_to_the_next(tmp_path, no_inodes_left):
    from server_under_test.storage.files import FileStore

    first = FileStore(no_inodes_left)  # its .incoming folder takes the last free inode
    second = FileStore(tmp_path / "tier2")
    incoming = first.incoming(b"HEADER", overflow=[second])
    incoming.write([b"dataset"])
    path = second.path_for("1.2", "1.3", "1.4")
    assert incoming.error is None and incoming.store is second
    assert incoming.commit(path, replace=True) == 13 and path.read_bytes() == b"HEADERdataset"


def test_a_full_first_tier_sends_stores_to_the_second_and_loses_nothing(tmp_path, tiny_disk, tiny_studies):
    config = tmp_path / "tiers.toml"
    config.write_text(f'[[tiers]]\nname = "small"\npath = "{tiny_disk}"\n\n'
                      f'[[tiers]]\nname = "big"\npath = "{tmp_path / "big"}"\n')
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    sent = {}
    try:
        assoc, _ = client(archive)
        for _, ds in unique_copies(sorted(tiny_studies.rglob("*.dcm")), 3):
            assert assoc.send_c_store(ds).Status == 0
            sent[ds.SOPInstanceUID] = ds.PixelData
        assoc.release()
        rows = index_rows(archive)
    finally:
        archive.stop()
    assert set(rows) == set(sent)
    assert {tier for _, tier in rows.values()} == {0, 1}  # both tiers hold instances
    assert all(dcmread(path).PixelData == sent[uid] for uid, (path, _) in rows.items())
    assert not list(tiny_disk.rglob(".tmp-*")) and not list((tmp_path / "big").rglob(".tmp-*"))


def test_sigterm_finishes_the_store_in_flight(tmp_path, tiny_studies):
    from server_under_test.upper_layer.association import proposed_context, request
    from server_under_test.upper_layer.dimse import encode_command, store_request

    archive = start_archive(tmp_path / "archive")
    source = sorted(tiny_studies.rglob("*.dcm"))[0]
    ds = dcmread(source)
    data = dataset_bytes_of_file(source)
    assoc = request("127.0.0.1", archive.port, "SLOW", archive.ae_title, [proposed_context(XA, [ExplicitVRLittleEndian])],
                    0, 30)
    command = store_request(1, XA, ds.SOPInstanceUID)  # the command, announcing a dataset...
    assoc.wire.send_pdata(1, True, [encode_command(command)], 0)
    half = len(data) // 2
    import struct

    assoc.wire.send_all([struct.pack(">BBIIBB", 4, 0, half + 6, half + 2, 1, 0x00), data[:half]])
    archive.process.send_signal(signal.SIGTERM)  # ...SIGTERM arrives with half the dataset sent
    time.sleep(0.5)
    rest = len(data) - half
    assoc.wire.send_all([struct.pack(">BBIIBB", 4, 0, rest + 6, rest + 2, 1, 0x02), data[half:]])
    reply = assoc.reader.read()
    assoc.release()
    assert reply.command.Status == 0
    assert archive.process.wait(30) == 0
    assert ds.SOPInstanceUID in index_rows(archive)


def test_metrics_and_status_describe_the_archive(tmp_path, tiny_studies):
    archive = start_archive(tmp_path / "archive", "--metrics-port", "0")
    try:
        assoc, _ = client(archive)
        assert assoc.send_c_store(dcmread(sorted(tiny_studies.rglob("*.dcm"))[0])).Status == 0
        assoc.release()
        time.sleep(0.3)
        metrics = urllib.request.urlopen(f"{archive.metrics_url}/metrics", timeout=10).read().decode()
        status = json.loads(urllib.request.urlopen(f"{archive.metrics_url}/status", timeout=10).read())
    finally:
        archive.stop()
    assert 'pacsbench_archive_operations_total{operation="C-STORE",status="success"} 1.0' in metrics
    assert 'pacsbench_archive_associations_total{result="accepted"}' in metrics
    assert "pacsbench_archive_operation_seconds_bucket" in metrics
    assert 'pacsbench_archive_tier_used_bytes{tier="tier1"}' in metrics
    assert status["settings"]["fsync"] is True and status["index"]["instances"] == 1
    assert status["environment"]["hypervisor"] and status["environment"]["vcpus"] >= 1
    assert status["environment"]["storage"][0]["fs_type"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("prot = 104\n", "unknown key 'prot'"),
        ('duplicates = "sometimes"\n', "duplicates: expected one of overwrite, reject, keep-first"),
        ('[[tiers]]\nname = "a"\npath = "x"\ncapacity = "lots"\n', "[tiers.0] capacity: not a size"),
        ("workers = -1\n", "workers: expected a whole number"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, text, expected):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = subprocess.run([sys.executable, "-m", "server_under_test", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 2 and expected in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("policy, second_status, kept", [("reject", 0x0111, "first"), ("keep-first", 0, "first"),
                                                         ("overwrite", 0, "second")])
def test_duplicate_sop_instance_policy(tmp_path, tiny_studies, policy, second_status, kept):
    archive = start_archive(tmp_path / "archive", "--duplicates", policy)
    first = dcmread(sorted(tiny_studies.rglob("*.dcm"))[0])
    second = first.copy()
    second.file_meta = first.file_meta.copy()
    second.SeriesDescription = "a different second copy"
    try:
        assoc, _ = client(archive)
        assert assoc.send_c_store(first).Status == 0
        assert assoc.send_c_store(second).Status == second_status
        assoc.release()
        rows = index_rows(archive)
    finally:
        archive.stop()
    assert list(rows) == [first.SOPInstanceUID]
    stored = dataset_bytes_of_file(Path(rows[first.SOPInstanceUID][0]))
    assert stored == encoded(first if kept == "first" else second)
    assert len([p for p in (archive.data / "storage").rglob("*.dcm")]) == 1


# -- hostile peers: each gets a DICOM answer, and the archive stays up --------------------------
def raw_request(calling: bytes = b"RAW", called: bytes = b"PACSBENCH", max_pdu: int = 16382) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification and XA storage, with AE title fields as given (raw bytes)."""
    from server_under_test.upper_layer.association import encode_request, proposed_context

    pdu = bytearray(encode_request("X", "X", [proposed_context(Verification, [ExplicitVRLittleEndian]),
                                            proposed_context(XA, [ExplicitVRLittleEndian])], max_pdu))
    pdu[10:26], pdu[26:42] = called.ljust(16, b" "), calling.ljust(16, b" ")
    return bytes(pdu)


def answer_to(archive, sent: bytes, timeout: float = 10.0) -> tuple[int, bytes] | None:
    """What the archive answers to `sent` on a fresh connection: (PDU type, body), None if it just closes."""
    import socket

    from server_under_test.upper_layer.wire import LinkLost, Wire

    wire = Wire(socket.create_connection(("127.0.0.1", archive.port), timeout=timeout), timeout)
    try:
        wire.send_all([sent])
        pdu_type, body = wire.read_pdu(0)
        return pdu_type, bytes(body)
    except LinkLost:
        return None
    finally:
        wire.close()


def assert_still_answers_echo(archive) -> None:
    echoscu = require_tool("/usr/bin/echoscu", "dcmtk")
    assert subprocess.run([echoscu, "-to", "10", "-aec", archive.ae_title, "127.0.0.1", str(archive.port)],
                          timeout=30).returncode == 0


A_ABORT_PDU, A_ASSOCIATE_RJ_PDU = 0x07, 0x03


@pytest.mark.parametrize("pdu_type", [0x01, 0x05], ids=["a-associate-rq", "a-release-rq"])
def test_a_pdu_declaring_a_gibibyte_is_aborted_at_once(archive, pdu_type):
    answer = answer_to(archive, bytes([pdu_type, 0]) + (1 << 30).to_bytes(4, "big") + b"\x00" * 64, timeout=5)
    assert answer is not None and answer[0] == A_ABORT_PDU  # not a 1 GiB buffer waiting for its bytes
    assert answer[1][2:4] == b"\x02\x06"  # service provider, invalid PDU parameter value
    assert_still_answers_echo(archive)


FIXED_FIELDS = b"\x00\x01\x00\x00" + b"PACSBENCH".ljust(16) + b"RAW".ljust(16) + b"\x00" * 32
GARBLED_CONTEXT = b"\x20\x00\x00\x08" + b"\xff" * 8  # a presentation context item with nothing valid in it


@pytest.mark.parametrize("sent", [b"\x09\x00\x00\x00\x00\x04abcd",
                                  b"\x01\x00" + (68 + 12).to_bytes(4, "big") + FIXED_FIELDS + GARBLED_CONTEXT],
                         ids=["unknown-pdu-type", "undecodable-rq"])
def test_a_malformed_association_request_is_answered_with_a_abort(archive, sent):
    answer = answer_to(archive, sent)
    assert answer is not None and answer[0] == A_ABORT_PDU
    assert_still_answers_echo(archive)


@pytest.mark.parametrize("field", ["calling", "called"])
def test_a_non_ascii_ae_title_is_rejected(archive, field):
    title = b"BAD\xe9TITLE"
    answer = answer_to(archive, raw_request(**{field: title}))
    assert answer is not None and answer[0] == A_ASSOCIATE_RJ_PDU
    assert answer[1][1:4] == bytes([0x01, 0x01, 0x03 if field == "calling" else 0x07])
    assert_still_answers_echo(archive)


def test_a_maximum_pdu_too_small_for_a_pdv_is_refused(archive):
    answer = answer_to(archive, raw_request(max_pdu=6))
    assert answer is not None and answer[0] == A_ASSOCIATE_RJ_PDU, "a 6-byte PDU limit must not be accepted"
    assert answer[1][1:4] == bytes([0x01, 0x01, 0x01])  # permanent, service user, no reason given
    assert_still_answers_echo(archive)


def archive_holds_temp_files(archive) -> list[str]:
    """Temporary files of the archive: in `.incoming` folders, or still open in one of its processes."""
    import psutil

    left = [str(p) for p in archive.data.rglob(".incoming/*")]
    group = os.getpgid(archive.process.pid)
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                left += [f.path for f in process.open_files() if ".incoming" in f.path]
        except (psutil.Error, ProcessLookupError):
            pass
    return left


def store_raw(archive, sop_uid: str, dataset: bytes, command_uid: bytes | None = None) -> tuple[int, str]:
    """C-STORE `dataset` (explicit VR little endian bytes) as XA; (status, error comment)."""
    from server_under_test.upper_layer.association import proposed_context, request
    from server_under_test.upper_layer.dimse import encode_command, store_request

    contexts = [proposed_context(XA, [ExplicitVRLittleEndian])]
    assoc = request("127.0.0.1", archive.port, "RAW", archive.ae_title, contexts, 0, 10)
    try:
        command = encode_command(store_request(1, XA, sop_uid))
        if command_uid is not None:  # bytes our own encoder would never produce
            command = command.replace(sop_uid.encode(), command_uid)
        from server_under_test.upper_layer.wire import pdata_parts

        assoc.wire.send_all(pdata_parts(1, True, [command], assoc.peer_max_pdu)
                            + pdata_parts(1, False, [dataset], assoc.peer_max_pdu))
        answer = assoc.reader.read()
        return int(answer.command.Status), str(answer.command.get("ErrorComment", ""))
    finally:
        assoc.release()


def explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    import struct

    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def test_deeply_nested_sequences_get_a_failure_status_and_leave_no_temp_file(archive):
    import struct

    sop_uid = generate_uid()
    depth = 500
    sequence = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)  # undefined length
    opening = sequence + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)  # ... holding one undefined-length item
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    dataset = (explicit_element(0x0008, 0x0016, b"UI", XA.encode())
               + explicit_element(0x0008, 0x0018, b"UI", sop_uid.encode())
               + opening * depth + closing * depth
               + explicit_element(0x0020, 0x000D, b"UI", generate_uid().encode())
               + explicit_element(0x0020, 0x000E, b"UI", generate_uid().encode()))
    status, comment = store_raw(archive, sop_uid, dataset)
    assert status >= 0xA000 and "nested" in comment
    assert archive_holds_temp_files(archive) == []
    assert_still_answers_echo(archive)


def test_a_non_ascii_byte_in_the_sop_instance_uid_gets_a_failure_status(archive):
    sop_uid = generate_uid()
    bad = sop_uid[:-1].encode() + b"\xe9"
    dataset = explicit_element(0x0008, 0x0016, b"UI", XA.encode()) + explicit_element(0x0008, 0x0018, b"UI", bad)
    status, comment = store_raw(archive, sop_uid, dataset, command_uid=bad)
    assert status == 0xA900 and "UID" in comment
    assert archive_holds_temp_files(archive) == []
    assert index_rows(archive) == {}
    assert_still_answers_echo(archive)


def test_a_half_open_connection_is_aborted_by_artim_and_frees_its_slot(tmp_path):
    import socket

    config = tmp_path / "artim.toml"
    config.write_text("max_associations = 2\nworkers = 2\n")
    archive = start_archive(tmp_path / "archive", "--config", str(config), "--artim-timeout", "1")
    try:
        half_open = [socket.create_connection(("127.0.0.1", archive.port), timeout=10) for _ in range(2)]
        half_open[0].sendall(raw_request()[:20])  # the start of an A-ASSOCIATE-RQ, never its end
        started = time.monotonic()
        answers = [s.recv(10) for s in half_open]
        waited = time.monotonic() - started
        assert [a[:1] for a in answers] == [b"\x07", b"\x07"] and waited < 5  # A-ABORT, after about 1 s
        assert_still_answers_echo(archive)  # their slots are free again
    finally:
        archive.stop()


@pytest.mark.parametrize("where", ["option", "file"])
def test_an_artim_timeout_of_zero_is_one_line_and_exit_2(tmp_path, where):
    config = tmp_path / "artim.toml"
    config.write_text("artim_timeout = 0.0\n" if where == "file" else "")
    extra = ["--artim-timeout", "0"] if where == "option" else []
    result = subprocess.run([sys.executable, "-m", "server_under_test", "--config", str(config), "--port", "0",
                             "--data", str(tmp_path / "data"), *extra], capture_output=True, text=True, timeout=60)
    # argparse prints its usage above the error line, as for every other option
    assert result.returncode == 2 and "above 0" in result.stderr.splitlines()[-1], result.stderr
    assert where == "option" or result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "data").exists()


def test_max_associations_holds_across_workers(tmp_path):
    config = tmp_path / "limit.toml"
    config.write_text("max_associations = 3\nworkers = 3\n")
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    ae = AE(ae_title="FLOOD")
    ae.add_requested_context(Verification)
    answers = []
    held = []
    try:
        for _ in range(6):
            assoc = ae.associate("127.0.0.1", archive.port, ae_title=archive.ae_title,
                                 evt_handlers=[(evt.EVT_ACSE_RECV, lambda event: answers.append(event.primitive))])
            if assoc.is_established:
                held.append(assoc)
        assert len(held) == 3
        rejections = [(a.result, a.result_source, a.diagnostic) for a in answers if a.result is not None and a.result]
        # rejected-transient, service provider (presentation), local limit exceeded. pynetdicom's
        # requestor now and then reports the closing connection instead of the RJ it was sent (its
        # reactor races the close), so not every one of the 3 arrives decoded; those that do must
        # all say this.
        assert rejections and set(rejections) == {(0x02, 0x03, 0x02)}, rejections
        for assoc in held:
            assoc.release()
        time.sleep(0.3)
        assert_still_answers_echo(archive)
    finally:
        archive.stop()


@pytest.mark.slow
def test_the_robustness_script_finds_every_case_answered(tmp_path):
    """bench/benchmarks/robustness.py against the archive: a DICOM answer to every case, C-ECHO after each."""
    config = tmp_path / "quick.toml"
    config.write_text("artim_timeout = 2.0\nmax_associations = 8\n")
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    try:
        result = subprocess.run([sys.executable, "-m", "bench.benchmarks.robustness", "--port", str(archive.port),
                                 "--aet", archive.ae_title, "--flood", "12", "--slow-seconds", "6"],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        archive.stop()
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 17
    for row in rows:
        assert "  yes  " in row, row  # still answers C-ECHO afterwards
        assert not any(word in row for word in ("closed without", "no answer", "reset", "Error")), row
    assert any("8 A-ASSOCIATE-AC, 4 A-ASSOCIATE-RJ result 2 source 3 reason 2" in row for row in rows)
