"""Command sets and datasets the archive refuses: an unknown SOP class, nesting too deep, a UID that is not ASCII."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from helpers.archive import XA, assert_still_answers_echo, index_rows
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (
    Verification,
)


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


def archive_holds_temp_files(archive) -> list[str]:
    """Temporary files of the archive: in `.incoming` folders, or still open in one of its processes (an unnamed
    O_TMPFILE file shows in /proc as `.incoming/#inode (deleted)`, which psutil's open_files leaves out)."""
    import psutil

    left = [str(p) for p in archive.data.rglob(".incoming/*")]
    group = os.getpgid(archive.process.pid)
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) != group:
                continue
            for fd in Path(f"/proc/{process.pid}/fd").iterdir():
                target = os.readlink(fd)
                if "/.incoming/" in target:
                    left.append(target)
        except (psutil.Error, ProcessLookupError, FileNotFoundError, PermissionError):
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
        from server_under_test.upper_layer.messages import pdata_parts

        assoc.wire.send_all(
            pdata_parts(1, True, [command], assoc.peer_max_pdu) + pdata_parts(1, False, [dataset], assoc.peer_max_pdu)
        )
        answer = assoc.reader.read()
        return int(answer.command.Status), str(answer.command.get("ErrorComment", ""))
    finally:
        assoc.release()


def explicit_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:

    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def test_deeply_nested_sequences_get_a_failure_status_and_leave_no_temp_file(dcmtk, archive):

    sop_uid = generate_uid()
    depth = 500
    sequence = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)  # undefined length
    opening = sequence + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)  # ... holding one undefined-length item
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    dataset = (
        explicit_element(0x0008, 0x0016, b"UI", XA.encode())
        + explicit_element(0x0008, 0x0018, b"UI", sop_uid.encode())
        + opening * depth
        + closing * depth
        + explicit_element(0x0020, 0x000D, b"UI", generate_uid().encode())
        + explicit_element(0x0020, 0x000E, b"UI", generate_uid().encode())
    )
    status, comment = store_raw(archive, sop_uid, dataset)
    assert status >= 0xA000 and "nested" in comment
    assert archive_holds_temp_files(archive) == []
    assert_still_answers_echo(archive, dcmtk.echoscu)


def test_a_non_ascii_byte_in_the_sop_instance_uid_gets_a_failure_status(dcmtk, archive):
    sop_uid = generate_uid()
    bad = sop_uid[:-1].encode() + b"\xe9"
    dataset = explicit_element(0x0008, 0x0016, b"UI", XA.encode()) + explicit_element(0x0008, 0x0018, b"UI", bad)
    status, comment = store_raw(archive, sop_uid, dataset, command_uid=bad)
    assert status == 0xA900 and "UID" in comment
    assert archive_holds_temp_files(archive) == []
    assert index_rows(archive) == {}
    assert_still_answers_echo(archive, dcmtk.echoscu)
