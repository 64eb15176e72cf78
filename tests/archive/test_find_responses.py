"""C-FIND with many matches: responses go out in batches, every match arrives once, and a
C-CANCEL stops the operation (real archive process, the harness's upper layer and DCMTK findscu)."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest
from helpers.archive import start_archive
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from bench.benchmarks.archive_find import prefill
from bench.dicom.peer import Peer
from bench.dicom.scu import ServiceUser, identifier, next_message_id, query_proposals
from server_under_test.upper_layer.dimse import C_FIND, cancel_request, query_request
from server_under_test.upper_layer.messages import message_parts
from server_under_test.upper_layer.status import CANCEL_CODE, is_pending

INSTANCES = 20_000  # 1,000 studies of 20 instances: many batches of responses


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory):
    data = tmp_path_factory.mktemp("find") / "archive"
    data.mkdir()
    prefill(data / "index.sqlite", INSTANCES)
    running = start_archive(data)
    yield running
    running.stop()


def study_uids_in_index(archive) -> set[str]:
    with sqlite3.connect(archive.index) as db:
        return {row[0] for row in db.execute("SELECT study_uid FROM study")}


def connect(archive) -> ServiceUser:
    user = ServiceUser(Peer("127.0.0.1", archive.port, archive.ae_title), "FINDTEST", query_proposals())
    user.connect()
    return user


def test_every_match_arrives_once_across_batches(big_archive):
    user = connect(big_archive)
    try:
        status, matches = user.find(identifier("STUDY", StudyInstanceUID="", NumberOfStudyRelatedInstances=None))
    finally:
        user.release()
    assert status == 0
    uids = [m.StudyInstanceUID for m in matches]
    assert len(uids) == len(set(uids)) == 1000
    assert set(uids) == study_uids_in_index(big_archive)
    assert {int(m.NumberOfStudyRelatedInstances) for m in matches} == {20}


def test_findscu_receives_every_match(dcmtk, big_archive, tmp_path):
    findscu = dcmtk.findscu
    result = subprocess.run(
        [
            findscu,
            "-S",
            "-aec",
            big_archive.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=20210101-20210331",
            "-k",
            "StudyInstanceUID",
            "-X",
            "-od",
            str(tmp_path),
            "127.0.0.1",
            str(big_archive.port),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(big_archive.index) as db:
        expected = db.execute(
            "SELECT count(*) FROM study WHERE study_date BETWEEN '20210101' AND '20210331'"
        ).fetchone()[0]
    assert expected > 32  # more than two batches
    assert len(list(tmp_path.glob("rsp*.dcm"))) == expected


def test_cancel_sent_with_the_request_stops_the_find_and_the_association_goes_on(big_archive):
    user = connect(big_archive)
    try:
        assoc = user.assoc
        context_id = assoc.context_id(StudyRootQueryRetrieveInformationModelFind)
        syntax = assoc.transfer_syntax(context_id)
        query = encode(identifier("STUDY", StudyInstanceUID=""), syntax.is_implicit_VR, syntax.is_little_endian)
        message_id = next_message_id()
        # Request and cancel in one write: the archive finds the cancel before its first match.
        find = query_request(C_FIND, message_id, StudyRootQueryRetrieveInformationModelFind)
        assoc.wire.send_all(
            message_parts(context_id, find, [query], assoc.peer_max_pdu)
            + message_parts(context_id, cancel_request(message_id), None, assoc.peer_max_pdu)
        )
        pending = 0
        while True:
            command = assoc.reader.read().command
            assert command["MessageIDBeingRespondedTo"] == message_id
            if not is_pending(command["Status"]):
                break
            pending += 1
        assert command["Status"] == CANCEL_CODE
        assert pending < 1000
        status, matches = user.find(identifier("STUDY", StudyInstanceUID=""))  # the association still serves
        assert status == 0 and len(matches) == 1000
    finally:
        user.release()
