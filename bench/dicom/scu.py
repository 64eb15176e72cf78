"""One client association on the archive's own upper layer (server_under_test.upper_layer):
C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET.

C-STORE is the fast path: a pre-encoded dataset (chunks, the pixel chunk a view of shared
bytes) goes out as gathered P-DATA-TF PDUs, and the response is read off the socket
directly: no copies, no polling. Under locust the sockets are gevent's and every call
yields (see server_under_test.upper_layer.pdu). Every failure of the link (refused,
rejected, aborted, timed out) raises AssociationFailed with a one-line reason and drops
the association; the caller re-associates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from bench.dicom.arrivals import Gathered, InstanceCollector
from bench.dicom.peer import AssociationFailed, Peer, _why_unreachable
from server_under_test.upper_layer.association import Association, AssociationRejected, proposed_context, request
from server_under_test.upper_layer.dimse import (
    C_FIND,
    C_GET,
    C_MOVE,
    C_STORE,
    RESPONSE,
    Command,
    echo_request,
    query_request,
    response,
    store_request,
)
from server_under_test.upper_layer.messages import ReleaseRequested
from server_under_test.upper_layer.pdu import LinkLost
from server_under_test.upper_layer.status import SUCCESS_CODE, is_pending

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

# One message ID sequence per process: a C-MOVE's sub-operations name the request they
# belong to by (originator AE, message ID), and the users of one process share an AE.
_message_ids = itertools.count()


def next_message_id() -> int:
    return next(_message_ids) % 0xFFFF + 1


@dataclass
class RetrieveOutcome:
    """A C-MOVE or C-GET: the final status, the archive's sub-operation counts, what arrived (tallied)."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    gathered: Gathered = field(default_factory=Gathered)

    @property
    def instances(self) -> int:
        return self.gathered.instances

    @property
    def frames(self) -> int:
        return self.gathered.frames

    @property
    def bytes(self) -> int:
        return self.gathered.bytes

    def mismatch(self) -> str:
        """Why the counts and the arrivals disagree, or ''."""
        if self.completed + self.warning != self.instances:
            return (
                f"archive reported {self.completed} completed and {self.warning} warning sub-operations, "
                f"{self.instances} instances arrived"
            )
        return ""


@dataclass(eq=False)
class ServiceUser:
    """One association to `peer` proposing `proposals`; connect() again after a failure."""

    peer: Peer
    calling_ae: str
    proposals: list[PresentationContext]
    max_pdu: int = 0  # the largest PDU we receive; 0 = no limit
    timeout: float = 30.0
    assoc: Association | None = field(default=None, init=False)
    associations_opened: int = field(default=0, init=False)

    @property
    def connected(self) -> bool:
        return self.assoc is not None

    def connect(self) -> None:
        peer = self.peer
        try:
            self.assoc = request(
                peer.host, peer.port, self.calling_ae, peer.ae_title, self.proposals, self.max_pdu, self.timeout
            )
        except AssociationRejected as exc:
            raise AssociationFailed(f"{peer} rejected the association from {self.calling_ae}: {exc}") from None
        except (LinkLost, OSError):
            reason = _why_unreachable(peer, min(self.timeout, 5.0))
            raise AssociationFailed(f"cannot associate with {peer}: {reason}") from None
        self.associations_opened += 1

    def release(self) -> None:
        if self.assoc is not None:
            self.assoc.release()
        self.assoc = None

    def abort(self) -> None:
        if self.assoc is not None:
            self.assoc.abort()
        self.assoc = None

    def _context(self, abstract_syntax: str, transfer_syntax: str | None = None) -> int:
        context_id = self.assoc.context_id(abstract_syntax, transfer_syntax)
        if context_id is None:
            wanted = f"{abstract_syntax} in {transfer_syntax}" if transfer_syntax else abstract_syntax
            raise AssociationFailed(f"{self.peer} did not accept a presentation context for {wanted}")
        return context_id

    def _exchange(self, operation: str, exchange):
        """Run `exchange()` on the association; any link failure drops it and names the operation."""
        if self.assoc is None:
            raise AssociationFailed(f"{operation}: not associated")
        try:
            return exchange()
        except ReleaseRequested:
            self.abort()
            raise AssociationFailed(f"{operation}: the peer released the association") from None
        except (AssociationFailed, LinkLost) as exc:
            self.abort()
            raise AssociationFailed(f"{operation}: {exc}") from None
        except (OSError, ValueError) as exc:  # reset, timed out; ValueError: the socket was closed under us
            self.abort()
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise AssociationFailed(f"{operation}: the connection failed: {reason}") from None

    def _final_response(self, message_id: int, on_pending=None) -> Command:
        """Read responses to `message_id` until the final one; pending ones go to `on_pending(message)`."""
        while True:
            message = self.assoc.reader.read()
            command = message.command
            if command.get("MessageIDBeingRespondedTo") != message_id or not command["CommandField"] & RESPONSE:
                raise AssociationFailed(f"unexpected DIMSE message 0x{command['CommandField']:04X}")
            if not is_pending(command.get("Status", -1)):
                return command
            if on_pending:
                on_pending(message)

    # -- services -------------------------------------------------------------------------
    def echo(self) -> int:
        def exchange():
            message_id = next_message_id()
            self.assoc.send(self._context(Verification), echo_request(message_id))
            return self._final_response(message_id)["Status"]

        return self._exchange("C-ECHO", exchange)

    def store(self, sop_class: str, sop_instance: str, transfer_syntax: str, chunks: list) -> int:
        """One C-STORE of an encoded dataset; return the DICOM status."""

        def exchange():
            message_id = next_message_id()
            context_id = self._context(sop_class, transfer_syntax)
            self.assoc.send(context_id, store_request(message_id, sop_class, sop_instance), chunks)
            return self._final_response(message_id)["Status"]

        return self._exchange("C-STORE", exchange)

    def _send_query(self, command_field: int, model: str, identifier: Dataset, destination: str | None = None) -> int:
        message_id = next_message_id()
        context_id = self._context(model)
        syntax = self.assoc.transfer_syntax(context_id)
        encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian)
        self.assoc.send(context_id, query_request(command_field, message_id, model, destination), [encoded])
        return message_id

    def find(
        self, identifier: Dataset, model: str = StudyRootQueryRetrieveInformationModelFind, decode_matches: bool = True
    ) -> tuple[int, list]:
        """C-FIND; (final status, matches): datasets, or the encoded identifiers as received
        when not `decode_matches` (pydicom's decoding costs ~30 us a match, more than the archive)."""

        def exchange():
            matches = []
            message_id = self._send_query(C_FIND, model, identifier)

            def on_match(message):
                if not message.has_dataset:
                    return
                if not decode_matches:
                    matches.append(message.dataset)
                    return
                syntax = self.assoc.transfer_syntax(message.context_id)
                matches.append(decode(BytesIO(message.dataset), syntax.is_implicit_VR, syntax.is_little_endian))

            return self._final_response(message_id, on_match)["Status"], matches

        return self._exchange("C-FIND", exchange)

    def move(
        self, identifier: Dataset, destination: str, model: str = StudyRootQueryRetrieveInformationModelMove
    ) -> tuple[int, RetrieveOutcome]:
        """C-MOVE to `destination`; (message id, outcome without arrivals: the destination has those)."""

        def exchange():
            message_id = self._send_query(C_MOVE, model, identifier, destination)
            return message_id, _outcome(self._final_response(message_id))

        return self._exchange("C-MOVE", exchange)

    def get(
        self, identifier: Dataset, model: str = StudyRootQueryRetrieveInformationModelGet, digests: bool = False
    ) -> RetrieveOutcome:
        """C-GET: the archive sends the instances back on this association (we answer each C-STORE)."""

        def exchange():
            message_id = self._send_query(C_GET, model, identifier)
            gathered = Gathered()
            reader = self.assoc.reader
            while True:
                message = reader.read_command(greedy=True)
                command = message.command
                if command["CommandField"] == C_STORE:
                    gathered.add(InstanceCollector(keep_all=digests).receive(self.assoc, message))
                    answer = response(
                        command, SUCCESS_CODE, AffectedSOPInstanceUID=command.get("AffectedSOPInstanceUID")
                    )
                    self.assoc.send(message.context_id, answer)
                    continue
                reader.skip_dataset(message)  # a response carries none; a stray one is not ours to keep
                if command.get("MessageIDBeingRespondedTo") != message_id:
                    raise AssociationFailed(f"unexpected DIMSE message 0x{command['CommandField']:04X}")
                if not is_pending(command.get("Status", -1)):
                    outcome = _outcome(command)
                    outcome.gathered = gathered
                    return outcome

        return self._exchange("C-GET", exchange)


def _outcome(final: Command) -> RetrieveOutcome:
    return RetrieveOutcome(
        final["Status"],
        final.get("NumberOfCompletedSuboperations", 0),
        final.get("NumberOfFailedSuboperations", 0),
        final.get("NumberOfWarningSuboperations", 0),
    )


def storage_proposals(
    sop_classes: list[str], transfer_syntaxes: list[str], scp_role: bool = False
) -> list[PresentationContext]:
    """One context per SOP class and syntax, so every pre-encoded instance finds its own."""
    return [
        proposed_context(sop_class, [syntax], scp_role) for sop_class in sop_classes for syntax in transfer_syntaxes
    ]


def query_proposals() -> list[PresentationContext]:
    models = (
        Verification,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
    )
    return [proposed_context(model, UNCOMPRESSED) for model in models]


def identifier(level: str, **keys) -> Dataset:
    """A query/retrieve identifier: the level and keyword = value (an empty value asks for the key)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def study_identifier(study_instance_uid: str) -> Dataset:
    return identifier("STUDY", StudyInstanceUID=study_instance_uid)
