"""C-GET and C-MOVE: find the instances, send each as a C-STORE sub-operation, report progress.

C-GET sends on the requestor's own association (it proposed storage contexts with the SCP
role); C-MOVE opens a new association to a destination from the AE table. Stored files go
out with sendfile when the negotiated transfer syntax is the stored one. A peer that takes
only uncompressed syntaxes gets the dataset re-encoded, and decompressed first if it was
stored compressed (through pydicom's decoders, so numpy and the codec plugins must be
installed: a guest image without them fails that sub-operation, with a log line that says
why). Nothing is ever compressed on the way out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext

from server_under_test.storage.files import TRAILING_PADDING, received_length
from server_under_test.upper_layer.association import MAX_CONTEXTS, Association, proposed_context, request
from server_under_test.upper_layer.dimse import C_STORE, RESPONSE, Command, encode_command, store_request
from server_under_test.upper_layer.messages import send_pdata, send_pdata_file
from server_under_test.upper_layer.status import (
    CANCEL_CODE,
    SUBOPERATIONS_FAILED_OR_WARNING,
    SUCCESS,
    SUCCESS_CODE,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
    UNABLE_TO_PROCESS,
    WARNING,
    status_class,
)

log = logging.getLogger("server_under_test.services.retrieve")


@dataclass
class Progress:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def count(self, status: int) -> None:
        self.remaining -= 1
        outcome = status_class(status)
        if outcome == SUCCESS:
            self.completed += 1
        elif outcome == WARNING:
            self.warning += 1
        else:
            self.failed += 1

    def final_status(self, cancelled: bool) -> int:
        if cancelled:
            return CANCEL_CODE
        if self.failed or self.warning:
            if self.completed == 0 and self.warning == 0:
                return UNABLE_TO_PERFORM_SUBOPERATIONS
            return SUBOPERATIONS_FAILED_OR_WARNING
        return SUCCESS_CODE

    def fill(self, command: Command, final: bool) -> None:
        if not final:
            command.NumberOfRemainingSuboperations = self.remaining
        command.NumberOfCompletedSuboperations = self.completed
        command.NumberOfFailedSuboperations = self.failed
        command.NumberOfWarningSuboperations = self.warning


def dataset_offset(path: str) -> tuple[int, int]:
    """(offset, length) of the dataset bytes after the preamble and file meta group, as received (without the
    trailing padding the archive may have added: storage.files)."""
    with open(path, "rb") as f:
        head = f.read(144)
        size = received_length(f.fileno())
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError(f"{path} is not a DICOM file with a file meta group length")
    offset = 144 + int.from_bytes(head[140:144], "little")
    return offset, size - offset


def _is_uncompressed(uid: str) -> bool:
    return UID(uid) in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)


def pick_context(
    assoc: Association, sop_class: str, stored_syntax: str, as_scu_only: bool
) -> PresentationContext | None:
    """The accepted context to send an instance on: its stored syntax first, else uncompressed."""
    usable = [cx for cx in assoc.contexts_for(sop_class) if not as_scu_only or cx.as_scu]
    for cx in usable:
        if cx.transfer_syntax[0] == stored_syntax:
            return cx
    for cx in usable:
        if _is_uncompressed(cx.transfer_syntax[0]):
            return cx
    return None


class CannotTranscode(Exception):
    """The stored instance cannot be turned into the syntax the peer accepted."""


def transcoded(path: str, target: UID) -> bytes:
    """The stored dataset in an uncompressed `target` syntax (decompressed first if need be)."""
    ds = dcmread(path)
    ds.pop(TRAILING_PADDING, None)  # the archive's own, if any: not part of the instance
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        try:  # keep the SOP Instance UID: this is the same instance, only its encoding changes
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # no numpy, no decoder plugin, or corrupt compressed data
            raise CannotTranscode(f"cannot decompress {ds.file_meta.TransferSyntaxUID.name}: {exc}") from None
    return encode(ds, target.is_implicit_VR, target.is_little_endian)


def send_instance(
    assoc: Association,
    context: PresentationContext,
    message_id: int,
    instance: tuple,
    originator: tuple[str, int] | None = None,
    on_other=None,
) -> int:
    """One C-STORE sub-operation; return the peer's status (or a failure status)."""
    sop_uid, sop_class, stored_syntax, path, _size = instance
    command = store_request(message_id, sop_class, sop_uid, originator)
    wire, max_pdu, cx_id = assoc.wire, assoc.peer_max_pdu, int(context.context_id)
    target_syntax = UID(context.transfer_syntax[0])
    if target_syntax == stored_syntax:
        offset, length = dataset_offset(path)
        send_pdata(wire, cx_id, True, [encode_command(command)], max_pdu)
        with open(path, "rb") as f:
            send_pdata_file(wire, cx_id, f, offset, length, max_pdu)
    else:
        try:
            data = transcoded(path, target_syntax)
        except CannotTranscode as exc:
            log.warning("sub-operation for %s failed: %s", sop_uid, exc)
            return UNABLE_TO_PROCESS
        assoc.send(cx_id, command, [data])
    while True:
        response = assoc.reader.read()
        if (
            response.command_field == C_STORE | RESPONSE
            and int(response.command.MessageIDBeingRespondedTo) == message_id
        ):
            return int(response.command.Status)
        if on_other is None:
            raise RuntimeError(
                f"unexpected DIMSE command 0x{response.command_field:04X} during a C-STORE sub-operation"
            )
        on_other(response)


def move_contexts(instances: list[tuple]) -> list[PresentationContext]:
    """Per SOP class, a context for each stored syntax alone and one for the uncompressed syntaxes.

    A context proposing several syntaxes gets one of them, the destination's choice; proposed
    apart, every stored syntax the destination takes is accepted, so instances go as stored
    wherever they can, and only those in a syntax it refused are decompressed (pick_context).
    """
    by_class: dict[str, dict[str, None]] = {}
    for _, sop_class, syntax, _, _ in instances:
        by_class.setdefault(sop_class, {})[syntax] = None
    fallbacks, as_stored = [], []  # the fallbacks first: past MAX_CONTEXTS, every class keeps one
    for sop_class, syntaxes in sorted(by_class.items()):
        fallbacks.append(proposed_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        as_stored += [proposed_context(sop_class, [syntax]) for syntax in syntaxes]
    return [*fallbacks, *as_stored][:MAX_CONTEXTS]


def open_destination(
    ae_title: str, host: str, port: int, calling_ae: str, instances: list[tuple], max_pdu: int, timeout: float
) -> Association:
    return request(host, port, calling_ae, ae_title, move_contexts(instances), max_pdu, timeout)


def readable_path(index, instance: tuple) -> tuple:
    """The instance with a path that exists now (a migration may have just moved it)."""
    if Path(instance[3]).exists():
        return instance
    moved = index.locate(instance[0])
    if moved is None:
        raise FileNotFoundError(instance[3])
    return (moved.sop_uid, moved.sop_class_uid, moved.transfer_syntax, moved.path, moved.size)
