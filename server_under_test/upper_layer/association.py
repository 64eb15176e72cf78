"""Association set-up on both sides, with pynetdicom's PDU codecs and context negotiation,
and the established association: its contexts, sending and reading messages, release, abort.

Acceptor (the archive, the harness's Storage SCP): read the A-ASSOCIATE-RQ, check the called
and calling AE titles and the association limit, negotiate presentation contexts (and SCP/SCU
roles, which C-GET needs), answer AC or RJ.
Requestor (the harness's client associations, the archive's C-MOVE sub-operations): propose
contexts, read AC/RJ, keep what was accepted.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC as AC_PDU
from pynetdicom.pdu import A_ASSOCIATE_RJ as RJ_PDU
from pynetdicom.pdu import A_ASSOCIATE_RQ as RQ_PDU
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor, negotiate_as_requestor

from server_under_test import __version__
from server_under_test.upper_layer.dimse import Command
from server_under_test.upper_layer.messages import MessageReader, message_parts
from server_under_test.upper_layer.pdu import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    MIN_PEER_PDU,
    P_DATA_TF,
    PDU_NAMES,
    LinkLost,
    ProtocolError,
    RequestTimerExpired,
    Wire,
)

log = logging.getLogger("server_under_test.upper_layer.association")

# The DICOM Application Context Name (PS3.6 Table A-1, PS3.7 A.2.1): pydicom and pynetdicom name no constant for it.
APPLICATION_CONTEXT = UID("1.2.840.10008.3.1.1.1")
IMPLEMENTATION_CLASS_UID = UID("2.25.209686784139418034851772209854668142536")  # pacsbench (UUID-derived)
IMPLEMENTATION_VERSION = f"PACSBENCH_{__version__}"[:16]

# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognized
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognized
REJECT_TOO_MANY = (0x02, 0x03, 0x02)  # transient, presentation related, local limit exceeded
REJECT_NO_REASON = (0x01, 0x01, 0x01)  # permanent, service user, no reason given (PS3.8 has none closer)
MAX_CONTEXTS = 128  # presentation context IDs are the odd numbers 1 to 255
RELEASE_TIMEOUT = 10.0  # seconds a requestor waits for the A-RELEASE-RP before it just closes
REJECT_LINGER = 2.0  # seconds an acceptor waits for the requestor to close after an A-ASSOCIATE-RJ (ARTIM)


# A-ASSOCIATE-RQ/AC body: protocol version (2), reserved (2), called AE (16), calling AE (16),
# reserved (32), then the variable items (application context, presentation contexts, user info).
FIXED_FIELDS = 68
CALLED_AE, CALLING_AE = slice(4, 20), slice(20, 36)
NEGOTIATION_CACHE_SIZE = 64


class NegotiationCache:
    """Answers for A-ASSOCIATE-RQs seen before, keyed by their variable items.

    Decoding a proposal of 128 presentation contexts, negotiating and encoding the answer
    with pynetdicom's objects costs about 23 ms of CPU here, per association. A modality or
    a workstation proposes the same contexts every time, so its answer is reused: only the
    AE titles (fixed fields, checked separately) differ between its requests.
    """

    def __init__(self, size: int = NEGOTIATION_CACHE_SIZE):
        self.size = size
        self._answers: OrderedDict[bytes, tuple[bytes, dict, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, items: bytes):
        with self._lock:
            answer = self._answers.get(items)
            if answer is None:
                self.misses += 1
            else:
                self.hits += 1
                self._answers.move_to_end(items)
            return answer

    def put(self, items: bytes, answer: tuple[bytes, dict, int]) -> None:
        with self._lock:
            self._answers[items] = answer
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)


NEGOTIATIONS = NegotiationCache()


class AssociationRejected(Exception):
    def __init__(self, result: int, source: int, reason: int):
        super().__init__(f"association rejected (result {result}, source {source}, reason {reason})")
        self.result, self.source, self.reason = result, source, reason


@dataclass(eq=False)  # compared and hashed by identity
class Association:
    """An established association: who, which contexts, how big the peer's PDUs may be;
    `reader` assembles the messages that arrive on it."""

    wire: Wire
    calling_ae: str
    called_ae: str
    peer_max_pdu: int
    our_max_pdu: int
    contexts: dict[int, PresentationContext] = field(default_factory=dict)
    reader: MessageReader = field(init=False)

    def __post_init__(self) -> None:
        self.reader = MessageReader(self.wire, self.our_max_pdu)

    def context(self, context_id: int) -> PresentationContext | None:
        return self.contexts.get(context_id)

    def contexts_for(self, abstract_syntax: str) -> list[PresentationContext]:
        return [cx for cx in self.contexts.values() if cx.abstract_syntax == abstract_syntax]

    def context_id(self, abstract_syntax: str, transfer_syntax: str | None = None) -> int | None:
        """The accepted context for `abstract_syntax` (in `transfer_syntax`, if given), or None."""
        for cx in self.contexts_for(abstract_syntax):
            if transfer_syntax is None or cx.transfer_syntax[0] == transfer_syntax:
                return int(cx.context_id)
        return None

    def transfer_syntax(self, context_id: int) -> UID:
        return UID(self.contexts[context_id].transfer_syntax[0])

    def send(self, context_id: int, command: Command, data: list | None = None) -> None:
        """A message, its command and dataset (buffers, sent without copies) in one gathered write."""
        self.wire.send_all(message_parts(context_id, command, data, self.peer_max_pdu))

    def release(self, timeout: float = RELEASE_TIMEOUT) -> None:
        """Requestor side: A-RELEASE-RQ, wait (at most `timeout`) for the RP, close. Never raises."""
        try:
            self.wire.sock.settimeout(timeout)
            self.wire.send_pdu(A_RELEASE_RQ, b"\x00\x00\x00\x00")
            while self.wire.read_pdu(0)[0] == P_DATA_TF:
                pass  # messages still in flight come before the RP (an A-ABORT or a release collision ends it too)
        except (LinkLost, OSError, ValueError):  # ValueError: the socket was closed under us
            pass
        finally:
            self.wire.close()

    def answer_release(self) -> None:
        """Acceptor side, the peer asked to release (ReleaseRequested): A-RELEASE-RP, then close. Never raises."""
        try:
            self.wire.send_pdu(A_RELEASE_RP, b"\x00\x00\x00\x00")
        except OSError:  # the peer did not wait for the answer
            pass
        self.wire.close()

    def abort(self, source: int = 0, reason: int = 0) -> None:
        """A-ABORT, then close. Never raises."""
        self.wire.send_abort(source, reason)
        self.wire.close()


def proposed_context(abstract_syntax: str, transfer_syntaxes: list[str], scp_role: bool = False) -> PresentationContext:
    """A presentation context to propose; `scp_role`: we ask to serve it (the storage SOP
    classes of a C-GET, whose instances come back on the same association)."""
    cx = PresentationContext()
    cx.abstract_syntax = abstract_syntax
    cx.transfer_syntax = list(dict.fromkeys(transfer_syntaxes))
    if scp_role:
        cx.scu_role, cx.scp_role = False, True
    return cx


def _user_information(max_pdu: int, roles: list | None = None) -> list:
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    return [length, impl, version, *(roles or [])]


def _peer_max_pdu(primitive: A_ASSOCIATE) -> int:
    for item in primitive.user_information:
        if isinstance(item, MaximumLengthNotification):
            return int(item.maximum_length_received or 0)
    return 0


def _roles_of(primitive: A_ASSOCIATE) -> dict:
    """The SCP/SCU role selection items of an RQ or AC: {SOP class: (SCU role, SCP role)}."""
    return {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in primitive.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }


def _role_items(contexts: list[PresentationContext]) -> list:
    """A role selection item for each context that asks for roles (proposed_context's scp_role)."""
    items = []
    for cx in contexts:
        if cx.scu_role is not None or cx.scp_role is not None:
            item = SCP_SCU_RoleSelectionNegotiation()
            item.sop_class_uid = cx.abstract_syntax
            item.scu_role, item.scp_role = bool(cx.scu_role), bool(cx.scp_role)
            items.append(item)
    return items


def _whole_pdu(pdu_type: int, body) -> bytes:
    """pynetdicom decodes whole PDUs: the header back in front of the body."""
    return struct.pack(">BBI", pdu_type, 0, len(body)) + bytes(body)


def _send_reject(wire: Wire, result: int, source: int, reason: int) -> None:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, reason
    pdu = RJ_PDU()
    pdu.from_primitive(primitive)
    wire.send_all([pdu.encode()])


def _ae_title(field: memoryview) -> str | None:
    """The AE title in a fixed field, or None when it is not one (PS3.5 allows the default
    character repertoire without control characters or backslash)."""
    raw = bytes(field).rstrip(b"\x00")
    if not all(0x20 <= b < 0x7F and b != 0x5C for b in raw):
        return None
    return raw.decode("ascii").strip(" ")


def _read_request(wire: Wire, artim: float | None) -> memoryview:
    """The A-ASSOCIATE-RQ's body, read before the association request timer (ARTIM) expires."""
    wire.deadline = None if artim is None else time.monotonic() + artim
    try:
        pdu_type, body = wire.read_pdu(0)
    except TimeoutError:  # the socket's timeout, shortened to what was left of ARTIM
        raise RequestTimerExpired("no complete A-ASSOCIATE-RQ before the request timer (ARTIM) expired") from None
    finally:
        wire.deadline = None
        wire.sock.settimeout(wire.timeout)
    if pdu_type != A_ASSOCIATE_RQ:
        raise ProtocolError(f"expected A-ASSOCIATE-RQ, got {PDU_NAMES[pdu_type]}", reason=2)
    if len(body) < FIXED_FIELDS:
        raise ProtocolError(f"A-ASSOCIATE-RQ of {len(body)} bytes is shorter than its fixed fields", reason=6)
    return body


def _reject(wire: Wire, rejection: tuple[int, int, int]) -> None:
    _send_reject(wire, *rejection)
    # PS3.8 9.2, state Sta13: the requestor closes the connection once it has read the RJ. Closing
    # first can cost the requestor the RJ (pynetdicom then reports an abort, not a rejection).
    wire.await_close(REJECT_LINGER)
    raise AssociationRejected(*rejection)


def accept(
    wire: Wire,
    ae_title: str,
    supported: list[PresentationContext],
    max_pdu: int,
    allowed_calling: set[str] | None = None,
    over_limit: bool = False,
    cache: NegotiationCache | None = NEGOTIATIONS,
    check_called_aet: bool = False,
    artim: float | None = None,
) -> Association:
    """Run the acceptor side of association establishment; raise AssociationRejected if refused,
    ProtocolError (the caller answers A-ABORT) for an RQ that does not decode, RequestTimerExpired
    when the whole RQ has not arrived within `artim` seconds.

    The called AE title must be `ae_title` only with `check_called_aet` (off by default, as in
    DCMTK's storescp and Orthanc: a peer configured with another name for us still gets in).
    """
    body = _read_request(wire, artim)
    calling, called = _ae_title(body[CALLING_AE]), _ae_title(body[CALLED_AE])
    if calling is None:
        _reject(wire, REJECT_CALLING_AE)
    if called is None or (check_called_aet and called != ae_title):
        _reject(wire, REJECT_CALLED_AE)
    if allowed_calling is not None and calling not in allowed_calling:
        _reject(wire, REJECT_CALLING_AE)
    if over_limit:
        _reject(wire, REJECT_TOO_MANY)
    items = max_pdu.to_bytes(4, "big") + bytes(body[FIXED_FIELDS:])  # what the answer depends on
    answer = cache.get(items) if cache else None
    if answer is None:
        try:
            answer = _negotiate(bytes(body), supported, max_pdu)
        except Exception as exc:  # pynetdicom's decoders raise many kinds on malformed items
            raise ProtocolError(f"cannot decode the A-ASSOCIATE-RQ: {exc!r}"[:200], reason=6) from None
        if cache:
            cache.put(items, answer)
    ac_items, accepted, peer_max_pdu = answer
    if 0 < peer_max_pdu < MIN_PEER_PDU:
        log.info("association from %s refused: it receives PDUs of %d bytes at most", calling, peer_max_pdu)
        _reject(wire, REJECT_NO_REASON)
    # The AC repeats the RQ's fixed fields (PS3.8 9.3.3: the AE titles are echoed, not tested).
    ac_body = b"\x00\x01\x00\x00" + bytes(body[4:FIXED_FIELDS]) + ac_items
    wire.send_pdu(A_ASSOCIATE_AC, ac_body)
    return Association(wire, calling, called, peer_max_pdu, max_pdu, accepted)


def _negotiate(body: bytes, supported: list[PresentationContext], max_pdu: int) -> tuple[bytes, dict, int]:
    """pynetdicom decodes the RQ, negotiates contexts and roles, and encodes the AC's items."""
    rq_pdu = RQ_PDU()
    rq_pdu.decode(_whole_pdu(A_ASSOCIATE_RQ, body))
    rq = rq_pdu.to_primitive()
    results, role_replies = negotiate_as_acceptor(rq.presentation_context_definition_list, supported, _roles_of(rq))
    ac = A_ASSOCIATE()
    ac.application_context_name = APPLICATION_CONTEXT
    ac.calling_ae_title = rq.calling_ae_title
    ac.called_ae_title = rq.called_ae_title
    ac.result, ac.result_source = 0x00, 0x01
    ac.presentation_context_definition_results_list = results
    ac.user_information = _user_information(max_pdu, role_replies)
    ac_pdu = AC_PDU()
    ac_pdu.from_primitive(ac)
    accepted = {int(cx.context_id): cx for cx in results if cx.result == 0x00}
    return ac_pdu.encode()[6 + FIXED_FIELDS :], accepted, _peer_max_pdu(rq)


def encode_request(calling_ae: str, called_ae: str, contexts: list[PresentationContext], max_pdu: int) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU; numbers `contexts` in order (IDs 1, 3, 5, ...)."""
    for number, cx in enumerate(contexts):
        cx.context_id = 2 * number + 1
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling_ae
    primitive.called_ae_title = called_ae
    primitive.presentation_context_definition_list = contexts
    primitive.user_information = _user_information(max_pdu, _role_items(contexts))
    pdu = RQ_PDU()
    pdu.from_primitive(primitive)
    return pdu.encode()


def request(
    host: str,
    port: int,
    calling_ae: str,
    called_ae: str,
    contexts: list[PresentationContext],
    max_pdu: int,
    timeout: float,
) -> Association:
    """Open an association as requestor; raise AssociationRejected, LinkLost or OSError on failure.

    `contexts` are numbered in order (IDs 1, 3, 5, ...); those that ask for roles
    (proposed_context's scp_role) get an SCP/SCU role selection item.
    """
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"at most {MAX_CONTEXTS} presentation contexts fit one association, not {len(contexts)}")
    sock = socket.create_connection((host, port), timeout=timeout)
    wire = Wire(sock, timeout)
    try:
        wire.send_all([encode_request(calling_ae, called_ae, contexts, max_pdu)])
        pdu_type, body = wire.read_pdu(0)
        if pdu_type == A_ASSOCIATE_RJ:
            rj = RJ_PDU()
            rj.decode(_whole_pdu(pdu_type, body))
            raise AssociationRejected(rj.result, rj.source, rj.reason_diagnostic)
        if pdu_type != A_ASSOCIATE_AC:
            raise ProtocolError(f"expected A-ASSOCIATE-AC, got {PDU_NAMES[pdu_type]}")
        ac_pdu = AC_PDU()
        ac_pdu.decode(_whole_pdu(pdu_type, body))
        ac = ac_pdu.to_primitive()
        negotiated = negotiate_as_requestor(contexts, ac.presentation_context_definition_results_list, _roles_of(ac))
        accepted = {int(cx.context_id): cx for cx in negotiated if cx.result == 0x00}
        peer_max_pdu = _peer_max_pdu(ac)
        if 0 < peer_max_pdu < MIN_PEER_PDU:
            raise ProtocolError(f"the peer receives PDUs of {peer_max_pdu} bytes at most (we need {MIN_PEER_PDU})")
        return Association(wire, calling_ae, called_ae, peer_max_pdu, max_pdu, accepted)
    except BaseException:
        wire.close()
        raise
