"""PDU framing from hostile peers: each gets a DICOM answer (A-ABORT, A-ASSOCIATE-RJ), and the archive stays up."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from helpers.archive import XA, assert_still_answers_echo, index_rows, raw_request
from pydicom.uid import ExplicitVRLittleEndian


def test_truncated_pdu_aborts_that_association_only(dcmtk, archive, tiny_studies):
    from server_under_test.upper_layer.association import proposed_context, request

    contexts = [proposed_context(XA, [ExplicitVRLittleEndian])]
    assoc = request("127.0.0.1", archive.port, "RAW", archive.ae_title, contexts, 0, 10)
    # A P-DATA-TF header that promises 100000 bytes, 10 of them, then the connection closes.
    assoc.wire.send_all([b"\x04\x00" + (100000).to_bytes(4, "big") + b"0123456789"])
    assoc.wire.close()
    time.sleep(0.5)
    echoscu = dcmtk.echoscu
    assert subprocess.run([echoscu, "-aec", archive.ae_title, "127.0.0.1", str(archive.port)]).returncode == 0
    assert index_rows(archive) == {}
    assert not [p for p in (archive.data / "storage").rglob("*") if p.is_file()]


def answer_to(archive, sent: bytes, timeout: float = 10.0) -> tuple[int, bytes] | None:
    """What the archive answers to `sent` on a fresh connection: (PDU type, body), None if it just closes."""

    from server_under_test.upper_layer.pdu import LinkLost, Wire

    wire = Wire(socket.create_connection(("127.0.0.1", archive.port), timeout=timeout), timeout)
    try:
        wire.send_all([sent])
        pdu_type, body = wire.read_pdu(0)
        return pdu_type, bytes(body)
    except LinkLost:
        return None
    finally:
        wire.close()


A_ABORT_PDU, A_ASSOCIATE_RJ_PDU = 0x07, 0x03


@pytest.mark.parametrize("pdu_type", [0x01, 0x05], ids=["a-associate-rq", "a-release-rq"])
def test_a_pdu_declaring_a_gibibyte_is_aborted_at_once(dcmtk, archive, pdu_type):
    answer = answer_to(archive, bytes([pdu_type, 0]) + (1 << 30).to_bytes(4, "big") + b"\x00" * 64, timeout=5)
    assert answer is not None and answer[0] == A_ABORT_PDU  # not a 1 GiB buffer waiting for its bytes
    assert answer[1][2:4] == b"\x02\x06"  # service provider, invalid PDU parameter value
    assert_still_answers_echo(archive, dcmtk.echoscu)


FIXED_FIELDS = b"\x00\x01\x00\x00" + b"PACSBENCH".ljust(16) + b"RAW".ljust(16) + b"\x00" * 32


GARBLED_CONTEXT = b"\x20\x00\x00\x08" + b"\xff" * 8  # a presentation context item with nothing valid in it


@pytest.mark.parametrize(
    "sent",
    [b"\x09\x00\x00\x00\x00\x04abcd", b"\x01\x00" + (68 + 12).to_bytes(4, "big") + FIXED_FIELDS + GARBLED_CONTEXT],
    ids=["unknown-pdu-type", "undecodable-rq"],
)
def test_a_malformed_association_request_is_answered_with_a_abort(dcmtk, archive, sent):
    answer = answer_to(archive, sent)
    assert answer is not None and answer[0] == A_ABORT_PDU
    assert_still_answers_echo(archive, dcmtk.echoscu)


@pytest.mark.parametrize("field", ["calling", "called"])
def test_a_non_ascii_ae_title_is_rejected(dcmtk, archive, field):
    title = b"BAD\xe9TITLE"
    answer = answer_to(archive, raw_request(**{field: title}))
    assert answer is not None and answer[0] == A_ASSOCIATE_RJ_PDU
    assert answer[1][1:4] == bytes([0x01, 0x01, 0x03 if field == "calling" else 0x07])
    assert_still_answers_echo(archive, dcmtk.echoscu)


def test_a_maximum_pdu_too_small_for_a_pdv_is_refused(dcmtk, archive):
    answer = answer_to(archive, raw_request(max_pdu=6))
    assert answer is not None and answer[0] == A_ASSOCIATE_RJ_PDU, "a 6-byte PDU limit must not be accepted"
    assert answer[1][1:4] == bytes([0x01, 0x01, 0x01])  # permanent, service user, no reason given
    assert_still_answers_echo(archive, dcmtk.echoscu)
