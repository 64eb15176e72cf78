"""What the archive acknowledged it keeps: through kill -9, through SIGTERM mid-store, and against a duplicate."""

from __future__ import annotations

import copy
import os
import signal
import struct
import threading
import time
from pathlib import Path

import pytest
from helpers.archive import XA, client, index_rows, start_archive
from helpers.dicomfiles import dataset_bytes, encoded, unique_copies
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian


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
            assert dataset_bytes(Path(rows[sop_uid][0])) == sent
        assert all(Path(path).is_file() for path, _ in rows.values())  # no row without its file
        assert not list((archive.data / "storage").rglob(".tmp-*"))  # leftovers removed at start
    finally:
        restarted.stop()


def test_kill_9_after_concurrent_acknowledgements_loses_none(tmp_path, tiny_studies):
    """Stores on 8 associations at once share syncs (the file system's journal commits, the
    index's group commit): each success must still come after its own file, folder entry and
    row are durable. Killed the moment every association has had acknowledgements, the archive
    restarts with each acknowledged instance in its index and on disk, byte for byte."""
    archive = start_archive(tmp_path / "archive", "--workers", "2")
    templates = sorted(tiny_studies.rglob("*.dcm"))
    associations, acknowledged = 8, {}
    per_association = [0] * associations
    lock = threading.Lock()

    def store_until_killed(number: int) -> None:
        try:
            assoc, _ = client(archive, calling=f"CONCURRENT{number}")
        except AssertionError:  # killed before this one associated
            return
        for _, ds in unique_copies(templates, 50):
            sent = encoded(ds)
            try:
                status = assoc.send_c_store(ds)
            except (RuntimeError, OSError):
                return
            if status.get("Status") != 0:
                return
            with lock:
                acknowledged[ds.SOPInstanceUID] = sent
                per_association[number] += 1

    senders = [threading.Thread(target=store_until_killed, args=(n,)) for n in range(associations)]
    [t.start() for t in senders]
    deadline = time.monotonic() + 60
    while min(per_association) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(archive.process.pid, signal.SIGKILL)  # supervisor and workers, with stores in flight
    archive.process.wait()
    [t.join(60) for t in senders]
    assert min(per_association) >= 2, per_association
    restarted = start_archive(archive.data)
    try:
        rows = index_rows(restarted)
        lost = [sop_uid for sop_uid in acknowledged if sop_uid not in rows]
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged instances are not in the index"
        for sop_uid, sent in acknowledged.items():
            assert dataset_bytes(Path(rows[sop_uid][0])) == sent, sop_uid
        assert all(Path(path).is_file() for path, _ in rows.values())  # no row without its file
    finally:
        restarted.stop()


def test_sigterm_finishes_the_store_in_flight(tmp_path, tiny_studies):
    from server_under_test.upper_layer.association import proposed_context, request
    from server_under_test.upper_layer.dimse import encode_command, store_request
    from server_under_test.upper_layer.messages import send_pdata

    archive = start_archive(tmp_path / "archive")
    source = sorted(tiny_studies.rglob("*.dcm"))[0]
    ds = dcmread(source)
    data = dataset_bytes(source)
    contexts = [proposed_context(XA, [ExplicitVRLittleEndian])]
    assoc = request("127.0.0.1", archive.port, "SLOW", archive.ae_title, contexts, 0, 30)
    command = store_request(1, XA, ds.SOPInstanceUID)  # the command, announcing a dataset...
    send_pdata(assoc.wire, 1, True, [encode_command(command)], 0)
    half = len(data) // 2

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


@pytest.mark.parametrize(
    "policy, second_status, kept", [("reject", 0x0111, "first"), ("keep-first", 0, "first"), ("overwrite", 0, "second")]
)
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
    stored = dataset_bytes(Path(rows[first.SOPInstanceUID][0]))
    assert stored == encoded(first if kept == "first" else second)
    assert len([p for p in (archive.data / "storage").rglob("*.dcm")]) == 1


@pytest.mark.parametrize("policy", ["reject", "keep-first"])
def test_a_file_left_without_its_row_is_replaced_and_indexed(tmp_path, tiny_studies, policy):
    """A crash between placing a file under its final name and committing its row leaves a file the index does not
    know. A resend must not be answered "already stored" with no row: it replaces the file and commits the row."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    archive = start_archive(tmp_path / "archive", "--duplicates", policy)
    ds = dcmread(sorted(tiny_studies.rglob("*.dcm"))[0])
    leftover = archive.data / "storage" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"a half-placed file from before the crash")  # as if fsynced and linked, no row
    try:
        sender, _ = client(archive)
        assert sender.send_c_store(ds).Status == 0
        sender.release()
        assoc, received = client(archive, "READER", get_role=True)
        get = Dataset()
        get.QueryRetrieveLevel = "IMAGE"
        get.StudyInstanceUID, get.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
        get.SOPInstanceUID = ds.SOPInstanceUID
        statuses = [s.Status for s, _ in assoc.send_c_get(get, StudyRootQueryRetrieveInformationModelGet)]
        assoc.release()
        rows = index_rows(archive)
    finally:
        archive.stop()
    assert statuses[-1] == 0
    assert received[ds.SOPInstanceUID] == encoded(ds)
    assert rows[ds.SOPInstanceUID][0] == str(leftover)
    assert dataset_bytes(leftover) == encoded(ds)


def test_the_same_instance_sent_twice_at_once_is_stored_once_under_reject(tmp_path, tiny_studies):
    """Two associations send the same instances at the same moment, each with its own content, with the reject
    policy. A store that finds the name taken waits for the one placing it (its row decides), so each instance is
    accepted exactly once and rejected once, and the file under its name is the accepted copy."""
    archive = start_archive(tmp_path / "archive", "--duplicates", "reject", "--workers", "2")
    # (deep copies: unique_copies's datasets share their elements with the template until the next one is made)
    copies = [copy.deepcopy(ds) for _, ds in unique_copies(sorted(tiny_studies.rglob("*.dcm")), 6)]
    statuses: dict[str, list[tuple[int, bytes]]] = {ds.SOPInstanceUID: [] for ds in copies}
    start = threading.Barrier(2)

    def send(label: str) -> None:
        assoc, _ = client(archive, calling=f"SENDER{label}")
        start.wait()
        for template in copies:
            ds = copy.deepcopy(template)
            ds.SeriesDescription = f"copy {label}"
            status = assoc.send_c_store(ds).Status
            statuses[ds.SOPInstanceUID].append((status, encoded(ds)))
        assoc.release()

    senders = [threading.Thread(target=send, args=(label,)) for label in "AB"]
    [t.start() for t in senders]
    [t.join(120) for t in senders]
    try:
        rows = index_rows(archive)
    finally:
        archive.stop()
    for sop_uid, answers in statuses.items():
        assert sorted(status for status, _ in answers) == [0, 0x0111], sop_uid
        accepted = next(sent for status, sent in answers if status == 0)
        assert dataset_bytes(Path(rows[sop_uid][0])) == accepted
    assert len(list((archive.data / "storage").rglob("*.dcm"))) == len(copies)
