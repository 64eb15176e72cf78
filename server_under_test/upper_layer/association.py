"""Association set-up on both sides, with pynetdicom's PDU codecs and context negotiation.

Acceptor: read the A-ASSOCIATE-RQ, check the calling AE and the association limit, negotiate
presentation contexts (and SCP/SCU roles, which C-GET needs), answer AC or RJ.
Requestor (for C-MOVE sub-operations): propose contexts, read AC/RJ, keep what was accepted.
"""

from __future__ import annotations

import socket
import threading
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
from server_under_test.upper_layer.wire import (
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
    PDU_NAMES,
    ProtocolError,
    Wire,
)

APPLICATION_CONTEXT = UID("1.2.840.10008.3.1.1.1")
IMPLEMENTATION_CLASS_UID = UID("2.25.209686784139418034851772209854668142536")  # pacsbench (UUID-derived)
IMPLEMENTATION_VERSION = f"PACSBENCH_{__version__}"[:16]

# A-ASSOCIATE-RJ (result, source, reason)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_TOO_MANY = (0x02, 0x03, 0x02)  # transient, presentation related, local limit exceeded


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


@dataclass
class Association:
    """An established association: who, which contexts, how big the peer's PDUs may be."""

    wire: Wire
    calling_ae: str
    called_ae: str
    peer_max_pdu: int
    our_max_pdu: int
    contexts: dict[int, PresentationContext] = field(default_factory=dict)

    def context(self, context_id: int) -> PresentationContext | None:
        return self.contexts.get(context_id)

    def contexts_for(self, abstract_syntax: str) -> list[PresentationContext]:
        return [cx for cx in self.contexts.values() if cx.abstract_syntax == abstract_syntax]


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


def _send_reject(wire: Wire, result: int, source: int, reason: int) -> None:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, reason
    pdu = RJ_PDU()
    pdu.from_primitive(primitive)
    wire.send_all([pdu.encode()])


def _ae_title(field: memoryview) -> str:
    return bytes(field).decode("ascii", "replace").strip(" \x00")


def accept(wire: Wire, ae_title: str, supported: list[PresentationContext], max_pdu: int,
           allowed_calling: set[str] | None, over_limit: bool,
           cache: NegotiationCache | None = NEGOTIATIONS) -> Association:
    """Run the acceptor side of association establishment; raise AssociationRejected if refused."""
    pdu_type, body = wire.read_pdu(0)
    if pdu_type != A_ASSOCIATE_RQ:
        raise ProtocolError(f"expected A-ASSOCIATE-RQ, got {PDU_NAMES[pdu_type]}")
    if len(body) < FIXED_FIELDS:
        raise ProtocolError(f"A-ASSOCIATE-RQ of {len(body)} bytes is shorter than its fixed fields")
    calling, called = _ae_title(body[CALLING_AE]), _ae_title(body[CALLED_AE])
    rejection = None
    if allowed_calling is not None and calling not in allowed_calling:
        rejection = REJECT_CALLING_AE
    elif over_limit:
        rejection = REJECT_TOO_MANY
    if rejection:
        _send_reject(wire, *rejection)
        raise AssociationRejected(*rejection)
    items = max_pdu.to_bytes(4, "big") + bytes(body[FIXED_FIELDS:])  # what the answer depends on
    answer = cache.get(items) if cache else None
    if answer is None:
        answer = _negotiate(bytes(body), supported, max_pdu)
        if cache:
            cache.put(items, answer)
    ac_items, accepted, peer_max_pdu = answer
    # The AC repeats the RQ's fixed fields (PS3.8 9.3.3: the AE titles are echoed, not tested).
    ac_body = b"\x00\x01\x00\x00" + bytes(body[4:FIXED_FIELDS]) + ac_items
    wire.send_pdu(A_ASSOCIATE_AC, ac_body)
    return Association(wire, calling, called, peer_max_pdu, max_pdu, accepted)


def _negotiate(body: bytes, supported: list[PresentationContext], max_pdu: int) -> tuple[bytes, dict, int]:
    """pynetdicom decodes the RQ, negotiates contexts and roles, and encodes the AC's items."""
    rq_pdu = RQ_PDU()
    rq_pdu.decode(bytes([A_ASSOCIATE_RQ, 0]) + len(body).to_bytes(4, "big") + body)
    rq = rq_pdu.to_primitive()
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in rq.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    results, role_replies = negotiate_as_acceptor(rq.presentation_context_definition_list, supported, roles)
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
    return ac_pdu.encode()[6 + FIXED_FIELDS:], accepted, _peer_max_pdu(rq)


def request(host: str, port: int, calling_ae: str, called_ae: str, contexts: list[PresentationContext],
            max_pdu: int, timeout: float, roles: list | None = None) -> Association:
    """Open an association as requestor; raise AssociationRejected or OSError on failure."""
    sock = socket.create_connection((host, port), timeout=timeout)
    wire = Wire(sock, timeout)
    try:
        primitive = A_ASSOCIATE()
        primitive.application_context_name = APPLICATION_CONTEXT
        primitive.calling_ae_title = calling_ae
        primitive.called_ae_title = called_ae
        primitive.presentation_context_definition_list = contexts
        primitive.user_information = _user_information(max_pdu, roles)
        pdu = RQ_PDU()
        pdu.from_primitive(primitive)
        wire.send_all([pdu.encode()])
        pdu_type, body = wire.read_pdu(0)
        whole = bytes([pdu_type, 0]) + len(body).to_bytes(4, "big") + body.tobytes()
        if pdu_type == A_ASSOCIATE_RJ:
            rj = RJ_PDU()
            rj.decode(whole)
            raise AssociationRejected(rj.result, rj.source, rj.reason_diagnostic)
        if pdu_type != A_ASSOCIATE_AC:
            raise ProtocolError(f"expected A-ASSOCIATE-AC, got {PDU_NAMES[pdu_type]}")
        ac_pdu = AC_PDU()
        ac_pdu.decode(whole)
        ac = ac_pdu.to_primitive()
        ac_roles = {item.sop_class_uid: (item.scu_role, item.scp_role) for item in ac.user_information
                    if isinstance(item, SCP_SCU_RoleSelectionNegotiation)}
        negotiated = negotiate_as_requestor(contexts, ac.presentation_context_definition_results_list, ac_roles)
        accepted = {int(cx.context_id): cx for cx in negotiated if cx.result == 0x00}
        return Association(wire, calling_ae, called_ae, _peer_max_pdu(ac), max_pdu, accepted)
    except BaseException:
        wire.close()
        raise


def release(assoc: Association) -> None:
    """Requestor side: A-RELEASE-RQ, wait for the RP (bounded by the socket timeout), close."""
    try:
        assoc.wire.send_pdu(A_RELEASE_RQ, b"\x00\x00\x00\x00")
        while True:
            pdu_type, _ = assoc.wire.read_pdu(0)
            if pdu_type in (A_RELEASE_RP,):
                break
            if pdu_type != P_DATA_TF:
                break
    except OSError:
        pass
    finally:
        assoc.wire.close()


def answer_release(wire: Wire) -> None:
    wire.send_pdu(A_RELEASE_RP, b"\x00\x00\x00\x00")
