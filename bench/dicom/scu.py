"""One client association on the harness's upper layer: C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET.

C-STORE is the fast path: a pre-encoded dataset (chunks, the pixel chunk a view of shared
bytes) goes out as gathered P-DATA-TF PDUs, and the response is read off the socket
directly: no copies, no polling. Every failure of the link (refused, rejected, aborted,
timed out) raises AssociationFailed with a one-line reason and drops the association;
the caller re-associates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.dsutils import decode, encode

from bench.dicom import dimse
from bench.dicom.arrivals import Arrival, InstanceCollector
from bench.dicom.peer import AssociationFailed, Peer, _why_unreachable
from bench.dicom.upper_layer import Association, PeerReleased, Proposal, Rejected, request_association

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
VERIFICATION = "1.2.840.10008.1.1"
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


@dataclass
class RetrieveOutcome:
    """A C-MOVE or C-GET: the final status, the archive's sub-operation counts, what arrived."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    arrivals: list[Arrival] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(a.frames for a in self.arrivals)

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.arrivals)

    def mismatch(self) -> str:
        """Why the counts and the arrivals disagree, or ''."""
        if self.completed + self.warning != len(self.arrivals):
            return (
                f"archive reported {self.completed} completed and {self.warning} warning sub-operations, "
                f"{len(self.arrivals)} instances arrived"
            )
        return ""


class ServiceUser:
    """One association to `peer` proposing `proposals`; connect() again after a failure."""

    def __init__(self, peer: Peer, calling_ae: str, proposals: list[Proposal], max_pdu: int = 0, timeout: float = 30.0):
        self.peer = peer
        self.calling_ae = calling_ae
        self.proposals = proposals
        self.max_pdu = max_pdu
        self.timeout = timeout
        self.assoc: Association | None = None
        self.associations_opened = 0

    @property
    def connected(self) -> bool:
        return self.assoc is not None

    def connect(self) -> None:
        try:
            self.assoc = request_association(
                self.peer.host,
                self.peer.port,
                self.calling_ae,
                self.peer.ae_title,
                self.proposals,
                self.max_pdu,
                self.timeout,
            )
        except Rejected as exc:
            raise AssociationFailed(f"{self.peer} rejected the association from {self.calling_ae}: {exc}") from None
        except (AssociationFailed, OSError):
            reason = _why_unreachable(self.peer, min(self.timeout, 5.0))
            raise AssociationFailed(f"cannot associate with {self.peer}: {reason}") from None
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
        except (AssociationFailed, PeerReleased, OSError) as exc:
            self.abort()
            raise AssociationFailed(f"{operation}: {exc or 'the peer released the association'}") from None

    def _final_response(self, message_id: int, on_pending=None) -> dict:
        """Read responses to `message_id` until the final one; pending ones go to `on_pending(message)`."""
        while True:
            message = self.assoc.receive()
            command = message.command
            if command.get("MessageIDBeingRespondedTo") != message_id or not command["CommandField"] & dimse.RESPONSE:
                raise AssociationFailed(f"unexpected DIMSE message 0x{command['CommandField']:04X}")
            if command.get("Status") not in dimse.PENDING_STATUSES:
                return command
            if on_pending:
                on_pending(message)

    # -- services -------------------------------------------------------------------------
    def echo(self) -> int:
        def exchange():
            message_id = dimse.next_message_id()
            self.assoc.send(self._context(VERIFICATION), dimse.echo_request(message_id))
            return self._final_response(message_id)["Status"]

        return self._exchange("C-ECHO", exchange)

    def store(self, sop_class: str, sop_instance: str, transfer_syntax: str, chunks: list) -> int:
        """One C-STORE of an encoded dataset; return the DICOM status."""

        def exchange():
            message_id = dimse.next_message_id()
            context_id = self._context(sop_class, transfer_syntax)
            self.assoc.send(context_id, dimse.store_request(message_id, sop_class, sop_instance), chunks)
            return self._final_response(message_id)["Status"]

        return self._exchange("C-STORE", exchange)

    def _send_query(self, command_field: int, model: str, identifier: Dataset, destination: str | None = None) -> int:
        message_id = dimse.next_message_id()
        context_id = self._context(model)
        syntax = UID(self.assoc.transfer_syntax(context_id))
        encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian)
        self.assoc.send(context_id, dimse.query_request(command_field, message_id, model, destination), [encoded])
        return message_id

    def find(self, identifier: Dataset, model: str = STUDY_ROOT_FIND, decode_matches: bool = True) -> tuple[int, list]:
        """C-FIND; (final status, matches): datasets, or the encoded identifiers as received
        when not `decode_matches` (pydicom's decoding costs ~30 us a match, more than the archive)."""

        def exchange():
            matches = []
            message_id = self._send_query(dimse.C_FIND, model, identifier)

            def on_match(message):
                if message.data is None:
                    return
                if not decode_matches:
                    matches.append(message.data)
                    return
                syntax = UID(self.assoc.transfer_syntax(message.context_id))
                matches.append(decode(BytesIO(message.data), syntax.is_implicit_VR, syntax.is_little_endian))

            return self._final_response(message_id, on_match)["Status"], matches

        return self._exchange("C-FIND", exchange)

    def move(self, identifier: Dataset, destination: str, model: str = STUDY_ROOT_MOVE) -> tuple[int, RetrieveOutcome]:
        """C-MOVE to `destination`; (message id, outcome without arrivals: the destination has those)."""

        def exchange():
            message_id = self._send_query(dimse.C_MOVE, model, identifier, destination)
            return message_id, _outcome(self._final_response(message_id))

        return self._exchange("C-MOVE", exchange)

    def get(self, identifier: Dataset, model: str = STUDY_ROOT_GET, digests: bool = False) -> RetrieveOutcome:
        """C-GET: the archive sends the instances back on this association (we answer each C-STORE)."""

        def exchange():
            message_id = self._send_query(dimse.C_GET, model, identifier)
            arrivals = []
            while True:
                collector = InstanceCollector(keep_all=digests)
                message = self.assoc.receive(on_fragment=collector)
                command = message.command
                if command["CommandField"] == dimse.C_STORE:
                    arrivals.append(collector.finish(command, self.assoc.transfer_syntax(message.context_id)))
                    self.assoc.send(message.context_id, dimse.response(command, 0x0000))
                elif command.get("MessageIDBeingRespondedTo") != message_id:
                    raise AssociationFailed(f"unexpected DIMSE message 0x{command['CommandField']:04X}")
                elif command.get("Status") not in dimse.PENDING_STATUSES:
                    outcome = _outcome(command)
                    outcome.arrivals = arrivals
                    return outcome

        return self._exchange("C-GET", exchange)


def _outcome(final: dict) -> RetrieveOutcome:
    return RetrieveOutcome(
        final["Status"],
        final.get("NumberOfCompletedSuboperations", 0),
        final.get("NumberOfFailedSuboperations", 0),
        final.get("NumberOfWarningSuboperations", 0),
    )


def storage_proposals(sop_classes: list[str], transfer_syntaxes: list[str], scp_role: bool = False) -> list[Proposal]:
    """One context per SOP class and syntax, so every pre-encoded instance finds its own."""
    return [Proposal(sop_class, [syntax], scp_role) for sop_class in sop_classes for syntax in transfer_syntaxes]


def query_proposals() -> list[Proposal]:
    return [Proposal(model, UNCOMPRESSED) for model in (VERIFICATION, STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET)]


def identifier(level: str, **keys) -> Dataset:
    """A query/retrieve identifier: the level and keyword = value (an empty value asks for the key)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def study_identifier(study_instance_uid: str) -> Dataset:
    return identifier("STUDY", StudyInstanceUID=study_instance_uid)
