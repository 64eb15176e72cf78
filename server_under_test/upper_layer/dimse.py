"""DIMSE command sets: a small, fast codec for group 0000 (implicit VR little endian).

Command sets are tiny and fixed in form; encoding them through pydicom's general dataset
machinery cost more than writing the instance to disk (measured: ~1.5 ms per C-STORE), so
they are packed and unpacked here from a table of the command elements (PS3.7 E.1). The
requests and responses both sides build (the archive, and the harness as a requestor and
as a Storage SCP) are made here too.
"""

from __future__ import annotations

import struct

from pynetdicom.sop_class import Verification

# Command Field values (PS3.7 E.1); a response is its request's value with RESPONSE set.
C_STORE, C_GET, C_FIND, C_MOVE, C_ECHO, C_CANCEL = 0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0FFF
RESPONSE = 0x8000
OPERATION = {C_STORE: "C-STORE", C_GET: "C-GET", C_FIND: "C-FIND", C_MOVE: "C-MOVE", C_ECHO: "C-ECHO"}
NO_DATASET = 0x0101  # Command Data Set Type: no dataset follows (any other value: one does)
MEDIUM = 0x0000  # Priority

# tag element -> (keyword, VR); all in group 0000
COMMAND_ELEMENTS = {
    0x0000: ("CommandGroupLength", "UL"),
    0x0002: ("AffectedSOPClassUID", "UI"),
    0x0003: ("RequestedSOPClassUID", "UI"),
    0x0100: ("CommandField", "US"),
    0x0110: ("MessageID", "US"),
    0x0120: ("MessageIDBeingRespondedTo", "US"),
    0x0600: ("MoveDestination", "AE"),
    0x0700: ("Priority", "US"),
    0x0800: ("CommandDataSetType", "US"),
    0x0900: ("Status", "US"),
    0x0901: ("OffendingElement", "AT"),
    0x0902: ("ErrorComment", "LO"),
    0x0903: ("ErrorID", "US"),
    0x1000: ("AffectedSOPInstanceUID", "UI"),
    0x1001: ("RequestedSOPInstanceUID", "UI"),
    0x1020: ("NumberOfRemainingSuboperations", "US"),
    0x1021: ("NumberOfCompletedSuboperations", "US"),
    0x1022: ("NumberOfFailedSuboperations", "US"),
    0x1023: ("NumberOfWarningSuboperations", "US"),
    0x1030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x1031: ("MoveOriginatorMessageID", "US"),
}
ELEMENT_OF = {keyword: (element, vr) for element, (keyword, vr) in COMMAND_ELEMENTS.items()}


class Command(dict):
    """A command set as keyword -> value, readable as attributes (command.MessageID)."""

    def __getattr__(self, keyword: str):
        try:
            return self[keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def __setattr__(self, keyword: str, value) -> None:
        if keyword not in ELEMENT_OF:
            raise AttributeError(f"{keyword} is not a command element")
        self[keyword] = value


def _encode_value(vr: str, value) -> bytes:
    if vr == "US":
        return struct.pack("<H", int(value))
    if vr == "UL":
        return struct.pack("<I", int(value))
    if vr == "AT":
        tag = int(value)
        return struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    raw = str(value).encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\x00" if vr == "UI" else b" "
    return raw


def encode_command(command: dict) -> bytes:
    """The command set with its group length first, elements in tag order."""
    body = bytearray()
    for keyword, value in sorted(command.items(), key=lambda kv: ELEMENT_OF[kv[0]][0]):
        element, vr = ELEMENT_OF[keyword]
        if element == 0x0000 or value is None:
            continue
        encoded = _encode_value(vr, value)
        body += struct.pack("<HHI", 0x0000, element, len(encoded)) + encoded
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + bytes(body)


def decode_command(data: bytes) -> Command:
    """Parse a command set; unknown elements are skipped, non-command groups are an error."""
    command = Command()
    offset = 0
    while offset + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, offset)
        value = data[offset + 8 : offset + 8 + length]
        if group != 0x0000 or len(value) != length:
            raise ValueError(f"bad command element ({group:04X},{element:04X}) length {length}")
        offset += 8 + length
        known = COMMAND_ELEMENTS.get(element)
        if known is None:
            continue
        keyword, vr = known
        if vr == "US":
            command[keyword] = struct.unpack("<H", value)[0]
        elif vr == "UL":
            command[keyword] = struct.unpack("<I", value)[0]
        elif vr == "AT":
            g, e = struct.unpack("<HH", value)
            command[keyword] = (g << 16) | e
        else:
            command[keyword] = value.decode("ascii", "replace").rstrip("\x00 ")
    if offset != len(data):
        raise ValueError("trailing bytes after the last command element")
    if "CommandField" not in command:
        raise ValueError("no CommandField in the command set")
    return command


def store_request(
    message_id: int, sop_class: str, sop_instance: str, originator: tuple[str, int] | None = None
) -> Command:
    """A C-STORE request; `originator` (AE title, message ID) when it is a C-MOVE sub-operation."""
    command = Command(
        AffectedSOPClassUID=sop_class,
        CommandField=C_STORE,
        MessageID=message_id,
        Priority=MEDIUM,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop_instance,
    )
    if originator:
        command.MoveOriginatorApplicationEntityTitle, command.MoveOriginatorMessageID = originator
    return command


def echo_request(message_id: int) -> Command:
    return Command(
        AffectedSOPClassUID=Verification, CommandField=C_ECHO, MessageID=message_id, CommandDataSetType=NO_DATASET
    )


def query_request(command_field: int, message_id: int, model: str, destination: str | None = None) -> Command:
    """A C-FIND, C-MOVE (with a destination AE) or C-GET request; an identifier follows."""
    command = Command(
        AffectedSOPClassUID=model,
        CommandField=command_field,
        MessageID=message_id,
        Priority=MEDIUM,
        CommandDataSetType=0x0000,
    )
    if destination is not None:
        command.MoveDestination = destination
    return command


def cancel_request(message_id: int) -> Command:
    """C-CANCEL of the operation `message_id`."""
    return Command(CommandField=C_CANCEL, MessageIDBeingRespondedTo=message_id, CommandDataSetType=NO_DATASET)


def response(request: Command, status: int, **extra) -> Command:
    """The response to `request` with `status`; `extra` command elements (None or '' left out)."""
    command = Command()
    sop_class = request.get("AffectedSOPClassUID")
    if sop_class:
        command.AffectedSOPClassUID = sop_class
    command.CommandField = request["CommandField"] | RESPONSE
    command.MessageIDBeingRespondedTo = request.get("MessageID", 0)
    command.Status = status
    for keyword, value in extra.items():
        if value not in (None, ""):
            setattr(command, keyword, value)
    return command


def file_meta_bytes(
    sop_class: str,
    sop_uid: str,
    transfer_syntax: str,
    implementation_uid: str,
    implementation_version: str,
    source_ae: str = "",
) -> bytes:
    """Preamble, 'DICM' and the file meta group (explicit VR little endian), as PS3.10 wants."""

    def element(number: int, vr: str, value: bytes) -> bytes:
        if vr in ("OB",):
            return struct.pack("<HH2sHI", 0x0002, number, vr.encode(), 0, len(value)) + value
        return struct.pack("<HH2sH", 0x0002, number, vr.encode(), len(value)) + value

    def text(value: str, pad: bytes) -> bytes:
        raw = value.encode("ascii")
        return raw + pad if len(raw) % 2 else raw

    body = b"".join(
        [
            element(0x0001, "OB", b"\x00\x01"),
            element(0x0002, "UI", text(sop_class, b"\x00")),
            element(0x0003, "UI", text(sop_uid, b"\x00")),
            element(0x0010, "UI", text(transfer_syntax, b"\x00")),
            element(0x0012, "UI", text(implementation_uid, b"\x00")),
            element(0x0013, "SH", text(implementation_version, b" ")),
            element(0x0016, "AE", text(source_ae, b" ")) if source_ae else b"",
        ]
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body
