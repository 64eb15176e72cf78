"""DIMSE command sets (group 0000, implicit VR little endian) packed and unpacked by hand.

A command set is a handful of fixed elements; building one through pydicom's dataset
writer costs about a millisecond, as much as putting a 2 MB instance on the wire.
Identifiers (the datasets of C-FIND, C-MOVE and C-GET) still go through pydicom.
"""

from __future__ import annotations

import itertools
import struct

from pydicom.datadict import dictionary_VR, keyword_for_tag

NO_DATASET = 0x0101
PENDING_STATUSES = (0xFF00, 0xFF01)
C_STORE, C_GET, C_FIND, C_MOVE, C_ECHO, C_CANCEL = 0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0FFF
RESPONSE = 0x8000
MEDIUM = 0x0000  # priority

# The group 0000 elements the harness writes or reads; names and VRs from pydicom's dictionary.
USED_ELEMENTS = (
    0x0002,
    0x0003,
    0x0100,
    0x0110,
    0x0120,
    0x0600,
    0x0700,
    0x0800,
    0x0900,
    0x0902,
    0x1000,
    0x1020,
    0x1021,
    0x1022,
    0x1023,
    0x1030,
    0x1031,
)
ELEMENTS = {number: (keyword_for_tag(number), dictionary_VR(number)) for number in USED_ELEMENTS}
NUMBER = {keyword: (number, vr) for number, (keyword, vr) in ELEMENTS.items()}

# One message ID sequence per process: a C-MOVE's sub-operations name the request they
# belong to by (originator AE, message ID), and the users of one process share an AE.
_message_ids = itertools.count()


def next_message_id() -> int:
    return next(_message_ids) % 0xFFFF + 1


def _value(vr: str, value) -> bytes:
    if vr == "US":
        return struct.pack("<H", value)
    text = str(value).encode("ascii")
    if len(text) % 2:  # even lengths: UIDs pad with NUL, text with a space
        text += b"\0" if vr == "UI" else b" "
    return text


def pack_command(**fields) -> bytes:
    """Keyword arguments (None skipped) -> encoded command set, group length first."""
    elements = sorted((NUMBER[k][0], NUMBER[k][1], v) for k, v in fields.items() if v is not None)
    body = b"".join(
        struct.pack("<HHI", 0, number, len(encoded)) + encoded
        for number, vr, value in elements
        for encoded in [_value(vr, value)]
    )
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def unpack_command(data: bytes) -> dict:
    """Encoded command set -> {keyword: value}; elements we do not use are skipped."""
    fields, at = {}, 0
    while at < len(data):
        group, number, length = struct.unpack_from("<HHI", data, at)
        value = data[at + 8 : at + 8 + length]
        if group != 0 or len(value) != length:
            raise ValueError(f"element ({group:04X},{number:04X}) of {length} bytes does not fit")
        at += 8 + length
        if number in ELEMENTS:
            keyword, vr = ELEMENTS[number]
            fields[keyword] = (
                struct.unpack("<H", value)[0] if vr == "US" else value.decode("ascii", "replace").rstrip("\0 ")
            )
    if "CommandField" not in fields:
        raise ValueError("no CommandField")
    return fields


def store_request(
    message_id: int, sop_class: str, sop_instance: str, originator: tuple[str, int] | None = None
) -> bytes:
    return pack_command(
        AffectedSOPClassUID=sop_class,
        CommandField=C_STORE,
        MessageID=message_id,
        Priority=MEDIUM,
        CommandDataSetType=0,
        AffectedSOPInstanceUID=sop_instance,
        MoveOriginatorApplicationEntityTitle=originator[0] if originator else None,
        MoveOriginatorMessageID=originator[1] if originator else None,
    )


def echo_request(message_id: int) -> bytes:
    return pack_command(
        AffectedSOPClassUID="1.2.840.10008.1.1",
        CommandField=C_ECHO,
        MessageID=message_id,
        CommandDataSetType=NO_DATASET,
    )


def query_request(command_field: int, message_id: int, model: str, destination: str | None = None) -> bytes:
    """C-FIND, C-MOVE (with a destination AE) or C-GET request; an identifier follows."""
    return pack_command(
        AffectedSOPClassUID=model,
        CommandField=command_field,
        MessageID=message_id,
        MoveDestination=destination,
        Priority=MEDIUM,
        CommandDataSetType=0,
    )


def response(request: dict, status: int) -> bytes:
    """The response to `request` (C-STORE or C-ECHO), no dataset."""
    return pack_command(
        AffectedSOPClassUID=request.get("AffectedSOPClassUID"),
        CommandField=request["CommandField"] | RESPONSE,
        MessageIDBeingRespondedTo=request.get("MessageID", 0),
        CommandDataSetType=NO_DATASET,
        Status=status,
        AffectedSOPInstanceUID=request.get("AffectedSOPInstanceUID"),
    )
