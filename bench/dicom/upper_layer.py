"""The harness's DICOM upper layer: PDUs on a plain socket, associations, DIMSE message framing.

Why not pynetdicom's transport for the load: its reactor polls (1 ms sleeps, one PDU per
loop) and copies every fragment, so a 2 MB C-STORE costs several milliseconds more than
the bytes take (DESIGN.md). Here a dataset leaves as P-DATA-TF PDUs built around
memoryviews of the caller's chunks and goes out with sendmsg, many PDUs per system call,
and incoming PDUs are cut out of one reused receive buffer.

pynetdicom still does what needs care and no speed: A-ASSOCIATE PDU encoding and decoding
and presentation context negotiation (both roles, SCP/SCU role selection for C-GET).

Everything here uses the `socket` module as found, so under locust (gevent-patched
sockets) the same code runs cooperatively, and in a plain process it blocks. Every
receive and send is bounded by the socket timeout.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

from pynetdicom.pdu import A_ASSOCIATE_AC as AcPdu
from pynetdicom.pdu import A_ASSOCIATE_RJ as RjPdu
from pynetdicom.pdu import A_ASSOCIATE_RQ as RqPdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor, negotiate_as_requestor

from bench import __version__
from bench.dicom.dimse import NO_DATASET, unpack_command
from bench.dicom.peer import AssociationFailed

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
PDU_NAMES = {
    1: "A-ASSOCIATE-RQ",
    2: "A-ASSOCIATE-AC",
    3: "A-ASSOCIATE-RJ",
    4: "P-DATA-TF",
    5: "A-RELEASE-RQ",
    6: "A-RELEASE-RP",
    7: "A-ABORT",
}
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.7702941"  # pacsbench harness (UID under pydicom's root)
IMPLEMENTATION_VERSION = f"PACSBENCH-{__version__}"[:16]
UNLIMITED_FRAGMENT = 4 << 20  # PDV size we send when the peer announces no limit
RECEIVE_BUFFER = 1 << 20  # one reused buffer: many PDUs per recv
LARGEST_PDU = 1 << 30  # a sanity bound on incoming lengths, never a real peer's
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
RELEASE_TIMEOUT = 10.0


class LinkClosed(AssociationFailed):
    """The peer closed the connection, aborted, or a read or write timed out."""


class PeerReleased(Exception):
    """The peer asked to release the association (an SCP sees this at the end)."""


class Rejected(AssociationFailed):
    def __init__(self, result: int, source: int, reason: int):
        super().__init__(f"association rejected (result {result}, source {source}, reason {reason})")
        self.result, self.source, self.reason = result, source, reason


class PduStream:
    """PDU framing over one TCP connection."""

    def __init__(self, sock: socket.socket, timeout: float):
        self.sock = sock
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms Nagle stalls per request
        self._buffer = bytearray(RECEIVE_BUFFER)
        self._view = memoryview(self._buffer)
        self._head = self._tail = 0  # unread bytes are _buffer[_head:_tail]

    def send(self, parts: list) -> None:
        """Write every byte of `parts` (bytes or memoryviews), gathered, IOV_MAX parts per call."""
        pending = [p if isinstance(p, memoryview) else memoryview(p) for p in parts if len(p)]
        start = 0
        try:
            while start < len(pending):
                written = self.sock.sendmsg(pending[start : start + IOV_MAX])
                while written and written >= len(pending[start]):
                    written -= len(pending[start])
                    start += 1
                if written:
                    pending[start] = pending[start][written:]
        except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
            raise LinkClosed(f"sending failed: {exc or type(exc).__name__}") from None

    def _fill(self, needed: int) -> None:
        """Have at least `needed` unread bytes in the buffer, reading as much as the socket offers."""
        while self._tail - self._head < needed:
            if len(self._buffer) - self._head < needed:  # no room behind the unread bytes: compact or grow
                unread = bytes(self._view[self._head : self._tail])
                if len(self._buffer) < needed:
                    self._buffer = bytearray(needed)
                    self._view = memoryview(self._buffer)
                self._buffer[: len(unread)] = unread
                self._head, self._tail = 0, len(unread)
            try:
                got = self.sock.recv_into(self._view[self._tail :])
            except (OSError, ValueError) as exc:
                raise LinkClosed(f"receiving failed: {exc or 'timed out'}") from None
            if not got:
                raise LinkClosed("the peer closed the connection")
            self._tail += got

    def _take(self, length: int) -> memoryview:
        self._fill(length)
        view = self._view[self._head : self._head + length]
        self._head += length
        return view

    def read_pdu(self) -> tuple[int, memoryview]:
        """(PDU type, body); the body is a view valid until the next read."""
        pdu_type, _, length = struct.unpack(">BBI", self._take(6))
        if pdu_type not in PDU_NAMES or length > LARGEST_PDU:
            raise LinkClosed(f"malformed PDU (type 0x{pdu_type:02X}, {length} bytes)")
        return pdu_type, self._take(length)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def pdata_parts(context_id: int, is_command: bool, chunks: list, max_pdu: int) -> list:
    """A message part (command or dataset) as P-DATA-TF PDUs: headers around views of `chunks`.

    One PDV per PDU, at most `max_pdu` bytes per PDU body (the peer's limit; 0 = none).
    Nothing is copied: the returned list alternates small headers and slices of the chunks.
    """
    fragment = (max_pdu or UNLIMITED_FRAGMENT + 6) - 6
    views = [memoryview(c).cast("B") for c in chunks if len(c)]
    total = sum(len(v) for v in views)
    parts, done, index, offset = [], 0, 0, 0
    while True:
        size = min(fragment, total - done)
        done += size
        flags = (0x01 if is_command else 0x00) | (0x02 if done >= total else 0x00)
        parts.append(struct.pack(">BBIIBB", P_DATA, 0, size + 6, size + 2, context_id, flags))
        while size:
            take = min(size, len(views[index]) - offset)
            parts.append(views[index][offset : offset + take])
            size -= take
            offset += take
            if offset == len(views[index]):
                index, offset = index + 1, 0
        if done >= total:
            return parts


@dataclass
class Message:
    """One received DIMSE message: its command set and, unless streamed away, its dataset."""

    context_id: int
    command: dict
    data: bytes | None = None
    data_bytes: int = 0

    @property
    def has_dataset(self) -> bool:
        return self.command.get("CommandDataSetType", NO_DATASET) != NO_DATASET


@dataclass
class Proposal:
    """A presentation context we ask for; `scp_role` when we must serve it (C-GET sub-operations)."""

    abstract_syntax: str
    transfer_syntaxes: list[str]
    scp_role: bool = False


@dataclass(eq=False)  # compared and hashed by identity
class Association:
    """An established association and the DIMSE messages that cross it."""

    stream: PduStream
    peer_max_pdu: int
    contexts: dict[int, PresentationContext]
    calling_ae: str = ""
    called_ae: str = ""
    _pdvs: list = field(default_factory=list)

    def context_id(self, abstract_syntax: str, transfer_syntax: str | None = None) -> int | None:
        for context_id, cx in self.contexts.items():
            if cx.abstract_syntax == abstract_syntax and transfer_syntax in (None, cx.transfer_syntax[0]):
                return context_id
        return None

    def transfer_syntax(self, context_id: int) -> str:
        return str(self.contexts[context_id].transfer_syntax[0])

    def send(self, context_id: int, command: bytes, data: list | None = None) -> None:
        """Command and dataset in one gathered write (TCP_NODELAY sends it at once)."""
        parts = pdata_parts(context_id, True, [command], self.peer_max_pdu)
        if data is not None:
            parts += pdata_parts(context_id, False, data, self.peer_max_pdu)
        self.stream.send(parts)

    def _next_pdv(self) -> tuple[int, int, memoryview]:
        """(context id, control flags, data) of the next PDV; views valid until the next PDU is read."""
        while not self._pdvs:
            pdu_type, body = self.stream.read_pdu()
            if pdu_type == P_DATA:
                self._pdvs = split_pdvs(body)
            elif pdu_type == RELEASE_RQ:
                raise PeerReleased()
            elif pdu_type == ABORT:
                raise LinkClosed("the peer aborted the association")
            else:
                raise LinkClosed(f"unexpected {PDU_NAMES[pdu_type]} on an established association")
        return self._pdvs.pop(0)

    def receive(self, on_fragment=None) -> Message:
        """The next message. Its dataset is kept as bytes, or handed to `on_fragment(view)` piece by piece."""
        command = bytearray()
        while True:
            context_id, flags, data = self._next_pdv()
            if not flags & 0x01:
                raise LinkClosed("dataset fragment before the command set was complete")
            command += data
            if flags & 0x02:
                break
        try:
            message = Message(context_id, unpack_command(bytes(command)))
        except ValueError as exc:
            raise LinkClosed(f"unreadable command set: {exc}") from None
        if message.has_dataset:
            kept = bytearray() if on_fragment is None else None
            while True:
                _, flags, data = self._next_pdv()
                if flags & 0x01:
                    raise LinkClosed("command fragment inside a dataset")
                message.data_bytes += len(data)
                if kept is None:
                    on_fragment(data)
                else:
                    kept += data
                if flags & 0x02:
                    break
            message.data = bytes(kept) if kept is not None else None
        return message

    def _send_control(self, pdu_type: int) -> None:
        """A-RELEASE-RQ/RP or A-ABORT: a PDU with four reserved (or source/reason zero) bytes."""
        self.stream.send([struct.pack(">BBI4x", pdu_type, 0, 4)])

    def release(self) -> None:
        """A-RELEASE-RQ, wait (briefly) for the RP, close. Never raises."""
        try:
            self.stream.sock.settimeout(RELEASE_TIMEOUT)
            self._send_control(RELEASE_RQ)
            while self.stream.read_pdu()[0] not in (RELEASE_RP, ABORT):
                pass
        except (AssociationFailed, OSError):
            pass
        finally:
            self.stream.close()

    def close_with(self, pdu_type: int) -> None:
        """Answer a release (RELEASE_RP) or abort (ABORT), then close. Never raises."""
        try:
            self._send_control(pdu_type)
        except AssociationFailed:
            pass
        self.stream.close()

    def answer_release(self) -> None:
        self.close_with(RELEASE_RP)

    def abort(self) -> None:
        self.close_with(ABORT)


def split_pdvs(body: memoryview) -> list[tuple[int, int, memoryview]]:
    """A P-DATA-TF body as (context id, message control header, data) per PDV item, without copies."""
    pdvs, at, end = [], 0, len(body)
    while at < end:
        try:
            item_length, context_id, flags = struct.unpack_from(">IBB", body, at)
        except struct.error:
            raise LinkClosed("truncated PDV item") from None
        data_end = at + 4 + item_length
        if item_length < 2 or data_end > end:
            raise LinkClosed(f"PDV item of {item_length} bytes does not fit its PDU")
        pdvs.append((context_id, flags, body[at + 6 : data_end]))
        at = data_end
    return pdvs


def _user_information(max_pdu: int, roles: list | None = None) -> list:
    """Maximum length, implementation class and version, then any SCP/SCU role items."""
    items = [MaximumLengthNotification(), ImplementationClassUIDNotification(), ImplementationVersionNameNotification()]
    items[0].maximum_length_received = max_pdu
    items[1].implementation_class_uid = IMPLEMENTATION_CLASS_UID
    items[2].implementation_version_name = IMPLEMENTATION_VERSION
    return items + list(roles or [])


def _max_pdu_of(primitive: A_ASSOCIATE) -> int:
    found = [i for i in primitive.user_information if isinstance(i, MaximumLengthNotification)]
    return int(found[0].maximum_length_received or 0) if found else 0


def _roles_of(primitive: A_ASSOCIATE) -> dict:
    return {
        i.sop_class_uid: (i.scu_role, i.scp_role)
        for i in primitive.user_information
        if isinstance(i, SCP_SCU_RoleSelectionNegotiation)
    }


def _whole_pdu(pdu_type: int, body: memoryview) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + bytes(body)


def _contexts(proposals: list[Proposal]) -> tuple[list[PresentationContext], list]:
    contexts, roles = [], []
    for number, proposal in enumerate(proposals):
        cx = PresentationContext()
        cx.context_id = 2 * number + 1
        cx.abstract_syntax = proposal.abstract_syntax
        cx.transfer_syntax = list(dict.fromkeys(proposal.transfer_syntaxes))
        if proposal.scp_role:
            cx.scu_role, cx.scp_role = False, True
            role = SCP_SCU_RoleSelectionNegotiation()
            role.sop_class_uid = proposal.abstract_syntax
            role.scu_role, role.scp_role = False, True
            roles.append(role)
        contexts.append(cx)
    return contexts, roles


def request_association(
    host: str,
    port: int,
    calling_ae: str,
    called_ae: str,
    proposals: list[Proposal],
    max_pdu: int = 0,
    timeout: float = 30.0,
) -> Association:
    """Connect and negotiate; raise AssociationFailed (Rejected, LinkClosed) or OSError."""
    if len(proposals) > 128:
        raise ValueError("at most 128 presentation contexts fit one association")
    sock = socket.create_connection((host, port), timeout=timeout)
    stream = PduStream(sock, timeout)
    try:
        contexts, roles = _contexts(proposals)
        rq = A_ASSOCIATE()
        rq.application_context_name = APPLICATION_CONTEXT
        rq.calling_ae_title, rq.called_ae_title = calling_ae, called_ae
        rq.presentation_context_definition_list = contexts
        rq.user_information = _user_information(max_pdu, roles)
        pdu = RqPdu()
        pdu.from_primitive(rq)
        stream.send([pdu.encode()])
        pdu_type, body = stream.read_pdu()
        if pdu_type == ASSOCIATE_RJ:
            rj = RjPdu()
            rj.decode(_whole_pdu(pdu_type, body))
            raise Rejected(rj.result, rj.source, rj.reason_diagnostic)
        if pdu_type != ASSOCIATE_AC:
            raise LinkClosed(f"expected A-ASSOCIATE-AC, got {PDU_NAMES[pdu_type]}")
        ac_pdu = AcPdu()
        ac_pdu.decode(_whole_pdu(pdu_type, body))
        ac = ac_pdu.to_primitive()
        negotiated = negotiate_as_requestor(contexts, ac.presentation_context_definition_results_list, _roles_of(ac))
        accepted = {int(cx.context_id): cx for cx in negotiated if cx.result == 0x00}
        return Association(stream, _max_pdu_of(ac), accepted, calling_ae, called_ae)
    except BaseException:
        stream.close()
        raise


def accept_association(stream: PduStream, supported: list[PresentationContext], max_pdu: int = 0) -> Association:
    """The acceptor's side: read the RQ, accept what `supported` allows (any calling or called AE)."""
    pdu_type, body = stream.read_pdu()
    if pdu_type != ASSOCIATE_RQ:
        raise LinkClosed(f"expected A-ASSOCIATE-RQ, got {PDU_NAMES[pdu_type]}")
    rq_pdu = RqPdu()
    rq_pdu.decode(_whole_pdu(pdu_type, body))
    rq = rq_pdu.to_primitive()
    results, role_replies = negotiate_as_acceptor(rq.presentation_context_definition_list, supported, _roles_of(rq))
    ac = A_ASSOCIATE()
    ac.application_context_name = APPLICATION_CONTEXT
    ac.calling_ae_title, ac.called_ae_title = rq.calling_ae_title, rq.called_ae_title
    ac.result, ac.result_source = 0x00, 0x01
    ac.presentation_context_definition_results_list = results
    ac.user_information = _user_information(max_pdu, role_replies)
    ac_pdu = AcPdu()
    ac_pdu.from_primitive(ac)
    stream.send([ac_pdu.encode()])
    accepted = {int(cx.context_id): cx for cx in results if cx.result == 0x00}
    return Association(
        stream, _max_pdu_of(rq), accepted, str(rq.calling_ae_title).strip(), str(rq.called_ae_title).strip()
    )
