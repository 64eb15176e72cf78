"""One association, start to end: negotiate, then answer DIMSE requests until release.

C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE, each answered with a DICOM status; a request
the archive cannot parse gets a failure status and the association carries on. Protocol
violations (truncated or malformed PDUs) abort the association, never the server.
"""

from __future__ import annotations

import logging
import multiprocessing
import select
import socket
import threading
import time
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.dsutils import decode
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from server_under_test.config import ArchiveConfig
from server_under_test.metrics import Metrics
from server_under_test.services import query, retrieve
from server_under_test.services.store import StoreService
from server_under_test.storage.index import Index
from server_under_test.upper_layer.association import Association, AssociationRejected, accept
from server_under_test.upper_layer.dimse import (
    C_CANCEL,
    C_ECHO,
    C_FIND,
    C_GET,
    C_MOVE,
    C_STORE,
    OPERATION,
    Command,
    response,
)
from server_under_test.upper_layer.messages import (
    Message,
    MessageReader,
    ReleaseRequested,
    command_parts,
    message_parts,
    pdata_parts,
)
from server_under_test.upper_layer.pdu import (
    ConnectionClosed,
    LinkLost,
    PeerAborted,
    ProtocolError,
    RequestTimerExpired,
    Wire,
)
from server_under_test.upper_layer.status import (
    CANCEL_CODE,
    IDENTIFIER_DOES_NOT_MATCH,
    MOVE_DESTINATION_UNKNOWN,
    PENDING_CODE,
    SUCCESS,
    SUCCESS_CODE,
    UNABLE_TO_PERFORM_SUBOPERATIONS,
    UNABLE_TO_PROCESS,
    UNRECOGNIZED_OPERATION,
    status_class,
)

log = logging.getLogger("server_under_test.services.connection")

CANCEL_CHECK_EVERY = 16  # matches between looks for a C-CANCEL (each look costs system calls)

# Query/retrieve identifiers and commands: the syntaxes pydicom encodes and decodes without plugins.
NATIVE_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,  # retired, still sent by old modalities
]
LOSSLESS_COMPRESSED = [
    JPEGLSLossless,
    JPEG2000Lossless,  # lossless only
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEG2000MCLossless,  # JPEG 2000 Part 2, lossless only
    HTJ2KLossless,  # lossless only
    HTJ2KLosslessRPCL,  # with RPCL options, lossless only
]
# Storage: every transfer syntax pydicom knows, stored as sent (the archive never decodes pixel
# data on the way in). pynetdicom's acceptor takes the first of our syntaxes that a proposed
# context also lists, so the order is the policy for a sender that offers several in one
# context: its compressed encoding first, lossless ones leading, then the uncompressed ones.
# DCMTK's storescu, for one, proposes a JPEG file's own syntax together with the uncompressed
# ones and cannot decompress: taking the uncompressed one would fail its store (measured).
ACCEPTED_TRANSFER_SYNTAXES = list(
    dict.fromkeys(
        [
            *LOSSLESS_COMPRESSED,
            *(str(ts) for ts in AllTransferSyntaxes if str(ts) not in NATIVE_TRANSFER_SYNTAXES),
            *NATIVE_TRANSFER_SYNTAXES,
        ]
    )
)
QUERY_RETRIEVE_MODELS = [
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
]


def quiet_pydicom() -> None:
    """The archive stores what it receives: pydicom's value validation only costs time here."""
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE


def supported_contexts() -> list[PresentationContext]:
    """What we accept: Verification, Query/Retrieve, and every storage SOP class in both roles."""
    contexts = []

    def add(abstract_syntax: str, syntaxes: list[str], both_roles: bool = False) -> None:
        cx = PresentationContext()
        cx.abstract_syntax = abstract_syntax
        cx.transfer_syntax = syntaxes
        if both_roles:  # storage: SCP for C-STORE, SCU for C-GET sub-operations
            cx.scu_role, cx.scp_role = True, True
        contexts.append(cx)

    add(Verification, NATIVE_TRANSFER_SYNTAXES[:2])
    for model in QUERY_RETRIEVE_MODELS:
        add(model, NATIVE_TRANSFER_SYNTAXES)
    for storage in AllStoragePresentationContexts:
        add(storage.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES, both_roles=True)
    return contexts


ACCEPT_POLL_SECONDS = 0.25  # an accept loop looks at its stop flag (and beats) at least this often
BEAT_SECONDS = 1.0  # a worker not seen looking for connections for longer is left out of the balance (busy, dead)
HAND_OFF_SECONDS = 0.002  # a busier worker looks again after this, in case nobody took the connection


class ConnectionBalance:
    """Spreads new connections over worker processes that accept on one shared socket (DIMSE's, DICOMweb's).

    One counter and one heartbeat per worker in shared memory, made by the supervisor before it forks. Every
    worker waiting on the socket is woken by a new connection, and the first to call accept() took it: 4 CT
    associations landed 3 + 1 on two workers about half the time (one worker's GIL and group commit serving three
    while the other idled), and a burst of DICOMweb clients all went to one worker. Now a worker with more
    connections than another that is looking for connections (its heartbeat is recent) leaves a new one to it; a
    worker stuck or dead for BEAT_SECONDS is left out, so connections are always taken.
    """

    def __init__(self, workers: int, context=multiprocessing):
        self.counts = context.Array("i", workers)
        self.beats = context.Array("d", workers, lock=False)  # when each worker last looked for connections

    def beat(self, worker: int) -> None:
        """`worker` is looking for connections (its accept loop calls this at least every ACCEPT_POLL_SECONDS)."""
        self.beats[worker] = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes

    def leave_to_another(self, worker: int) -> bool:
        """Should `worker` leave a waiting connection to a worker that has fewer and is looking for connections?"""
        now = time.monotonic()
        with self.counts.get_lock():
            counts = self.counts.get_obj()
            looking = [counts[i] for i in range(len(counts)) if i != worker and now - self.beats[i] < BEAT_SECONDS]
            return bool(looking) and counts[worker] > min(looking)

    def clear(self, worker: int) -> None:
        """A worker died: its connections are gone."""
        with self.counts.get_lock():
            self.counts.get_obj()[worker] = 0


class AssociationSlots:
    """The association limit across all worker processes.

    One counter per worker in shared memory (the balance's), created by the supervisor before it forks: a
    worker takes a slot under the array's lock when a connection arrives and gives it back
    when the connection ends, and the supervisor zeroes the counter of a worker that died
    (its connections died with it). A per-worker share of the limit would refuse too early
    on a busy worker and let the sum exceed it when the kernel spreads connections unevenly.
    The same counters spread the associations over the workers (ConnectionBalance).
    """

    def __init__(self, limit: int, workers: int, context=multiprocessing):
        self.limit = limit
        self.balance = ConnectionBalance(workers, context)
        self.counts = self.balance.counts

    def take(self, worker: int) -> bool:
        """Count a new connection of `worker`; False (nothing counted) when the limit is reached."""
        with self.counts.get_lock():
            counts = self.counts.get_obj()
            if sum(counts) >= self.limit:
                return False
            counts[worker] += 1
            return True

    def give_back(self, worker: int) -> None:
        with self.counts.get_lock():
            self.counts.get_obj()[worker] -= 1

    def clear(self, worker: int) -> None:
        """A worker died: its connections are gone."""
        self.balance.clear(worker)

    def in_use(self) -> int:
        with self.counts.get_lock():
            return sum(self.counts.get_obj())


@dataclass
class Shared:
    """What every association of one worker process shares."""

    config: ArchiveConfig
    index: Index
    store: StoreService
    metrics: Metrics
    contexts: list[PresentationContext]
    stopping: threading.Event
    slots: AssociationSlots
    worker: int = 0  # this worker's number: its counter in `slots`


class AssociationHandler:
    def __init__(self, shared: Shared, sock: socket.socket, peer: tuple):
        self.shared = shared
        self.wire = Wire(sock, shared.config.network_timeout)
        self.peer = peer
        self.assoc: Association | None = None
        self.reader: MessageReader | None = None
        self.message_ids = iter(range(1, 1 << 16))
        self._cancel_seen = False  # a C-CANCEL read while waiting for a C-GET sub-operation's response

    # -- life cycle ---------------------------------------------------------------------
    def run(self, counted: bool) -> None:
        """Serve the connection; `counted`: the accept loop took a slot for it (False: over the limit). A connection
        holds its slot from its first byte (a half-open one until ARTIM expires)."""
        shared = self.shared
        try:
            self._negotiate(over_limit=not counted)
            if self.assoc:
                self._serve()
        finally:
            if counted:
                shared.slots.give_back(shared.worker)
            shared.metrics.association_ended()
            self.wire.close()

    def _negotiate(self, over_limit: bool) -> None:
        config = self.shared.config
        allowed = set(config.allowed_calling_aets) or None
        try:
            self.assoc = accept(
                self.wire,
                config.ae_title,
                self.shared.contexts,
                config.max_pdu,
                allowed,
                over_limit,
                check_called_aet=config.check_called_aet,
                artim=config.artim_timeout,
            )
            self.reader = self.assoc.reader
            self.shared.metrics.association_started("accepted")
        except AssociationRejected as exc:
            log.info("association from %s rejected: %s", self.peer, exc)
            self.shared.metrics.association_started("rejected")
        except (ProtocolError, RequestTimerExpired) as exc:  # PS3.8 answers both with an A-ABORT
            log.info("association from %s failed during negotiation: %s", self.peer, exc)
            self.wire.send_abort(2, getattr(exc, "reason", 0))
            self.shared.metrics.association_started("failed")
        except (LinkLost, OSError) as exc:
            log.info("association from %s failed during negotiation: %s", self.peer, exc)
            self.shared.metrics.association_started("failed")

    def _wait_for_request(self) -> bool:
        """Wait until a request arrives; False when stopping (and nothing waits) or idle too long."""
        idle_deadline = time.monotonic() + self.shared.config.network_timeout
        # poll, not select.select: select refuses descriptors above 1024, which a busy worker can reach.
        waiting = select.poll()
        waiting.register(self.wire.sock, select.POLLIN | select.POLLPRI)
        while True:
            if self.reader.pending():  # a request already on the wire is served, even when stopping
                return True
            if self.shared.stopping.is_set():
                return False
            if waiting.poll(250):
                return True
            if time.monotonic() > idle_deadline:
                log.info("association from %s idle for %.0f s: aborting", self.peer, self.shared.config.network_timeout)
                return False

    def _serve(self) -> None:
        try:
            while self._wait_for_request():
                message = self.reader.read_command()
                if message.command_field != C_STORE:  # only C-STORE streams its dataset
                    message.data = [bytes(f) for batch in self.reader.fragments(message) for f in batch]
                self._dispatch(message)
            self.wire.send_abort()  # stopping or idle: in-flight work is done
        except ReleaseRequested:
            self.assoc.answer_release()
        except PeerAborted:
            log.debug("peer %s aborted", self.peer)
        except ProtocolError as exc:
            log.warning("association from %s (%s) aborted: %s", self.peer, self.assoc.calling_ae, exc)
            self.wire.send_abort(2, exc.reason)
        except (ConnectionClosed, OSError) as exc:
            log.warning("association from %s (%s) ended: %s", self.peer, self.assoc.calling_ae, exc)
            self.wire.send_abort(2, 0)
        except Exception:  # a bug or an input nobody foresaw: the peer still gets an answer
            log.exception(
                "association from %s (%s): aborting after an unexpected error", self.peer, self.assoc.calling_ae
            )
            self.wire.send_abort(2, 0)

    def _dispatch(self, message: Message) -> None:
        operation = OPERATION.get(message.command_field)
        started = time.perf_counter()
        if message.command_field == C_STORE:
            status, received = self.on_store(message)
        else:
            handler = {C_ECHO: self.on_echo, C_FIND: self.on_find, C_GET: self.on_get, C_MOVE: self.on_move}.get(
                message.command_field
            )
            if handler is None:
                if message.command_field != C_CANCEL:  # a C-CANCEL after the operation ended is harmless
                    self._send(message, response(message.command, UNRECOGNIZED_OPERATION))
                return
            status, received = handler(message), message.data_size
        self.shared.metrics.operation(operation, status_class(status), time.perf_counter() - started, received)

    def _parts(self, message: Message, command: Command, data: list | None = None) -> list:
        return message_parts(message.context_id, command, data, self.assoc.peer_max_pdu)

    def _send(self, message: Message, command: Command, data: list | None = None, before: list = ()) -> None:
        """Send a response; `before`: buffers of earlier responses to go out first, in the same system call."""
        self.wire.send_all([*before, *self._parts(message, command, data)])

    # -- services -----------------------------------------------------------------------
    def on_echo(self, message: Message) -> int:
        self._send(message, response(message.command, SUCCESS_CODE))
        return SUCCESS_CODE

    def on_store(self, message: Message) -> tuple[int, int]:
        outcome = self.shared.store.store(self.assoc, message, self.reader)
        if status_class(outcome.status) != SUCCESS:
            log.warning("C-STORE from %s: status 0x%04X: %s", self.assoc.calling_ae, outcome.status, outcome.comment)
        self._send(
            message,
            response(
                message.command,
                outcome.status,
                AffectedSOPInstanceUID=message.command.get("AffectedSOPInstanceUID"),
                ErrorComment=outcome.comment[:64] if outcome.status else None,
            ),
        )
        return outcome.status, outcome.size

    def _identifier(self, message: Message) -> Dataset:
        context = self.assoc.context(message.context_id)
        syntax = UID(context.transfer_syntax[0])
        try:
            return decode(
                BytesIO(message.dataset),
                syntax.is_implicit_VR,
                syntax.is_little_endian,
                syntax == DeflatedExplicitVRLittleEndian,
            )
        except RecursionError:  # pydicom reads nested sequences recursively
            raise ValueError("the identifier's sequences are nested too deep") from None

    def _model(self, message: Message) -> str:
        return str(self.assoc.context(message.context_id).abstract_syntax)

    def on_find(self, message: Message) -> int:
        batch: list = []  # matches go out CANCEL_CHECK_EVERY per system call, the final status with the last ones
        try:
            identifier = self._identifier(message)
            syntax = UID(self.assoc.context(message.context_id).transfer_syntax[0])
            results = query.find(
                self.shared.index.reader,
                identifier,
                self._model(message),
                self.shared.config.ae_title,
                syntax.is_implicit_VR,
                syntax.is_little_endian,
            )
            context_id, max_pdu = message.context_id, self.assoc.peer_max_pdu
            pending = command_parts(
                context_id, response(message.command, PENDING_CODE), True, max_pdu
            )  # the same for all
            for number, data in enumerate(results):
                if number % CANCEL_CHECK_EVERY == 0:
                    self.wire.send_all(batch)
                    batch = []
                    if self._cancelled(message):
                        self._send(message, response(message.command, CANCEL_CODE))
                        return CANCEL_CODE
                batch += pending
                batch += pdata_parts(context_id, False, [data], max_pdu)
        except query.QueryError as exc:
            self._send(
                message, response(message.command, IDENTIFIER_DOES_NOT_MATCH, ErrorComment=str(exc)[:64]), before=batch
            )
            return IDENTIFIER_DOES_NOT_MATCH
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("C-FIND from %s failed: %s", self.assoc.calling_ae, exc)
            self._send(message, response(message.command, UNABLE_TO_PROCESS, ErrorComment=str(exc)[:64]), before=batch)
            return UNABLE_TO_PROCESS
        self._send(message, response(message.command, SUCCESS_CODE), before=batch)
        return SUCCESS_CODE

    def _cancelled(self, message: Message) -> bool:
        """A C-CANCEL for this request waiting on the wire?"""
        if not self.reader.pending():
            return False
        incoming = self.reader.read()
        if incoming.command_field == C_CANCEL:
            return int(incoming.command.MessageIDBeingRespondedTo) == int(message.command.MessageID)
        raise ProtocolError(f"request 0x{incoming.command_field:04X} while another operation is in progress")

    def _instances(self, message: Message) -> list[tuple] | None:
        try:
            return query.instances_to_retrieve(
                self.shared.index.reader, self._identifier(message), self._model(message)
            )
        except (query.QueryError, ValueError, TypeError, KeyError, AttributeError) as exc:
            self._send(message, response(message.command, IDENTIFIER_DOES_NOT_MATCH, ErrorComment=str(exc)[:64]))
            return None

    def _suboperations(self, message: Message, instances: list[tuple], send_one) -> int:
        progress = retrieve.Progress(remaining=len(instances))
        cancelled = False
        for instance in instances:
            if self._cancel_seen or (not cancelled and self._cancelled(message)):
                cancelled = True
                break
            try:
                status = send_one(retrieve.readable_path(self.shared.index, instance))
            except (FileNotFoundError, ValueError) as exc:
                log.error("sub-operation for %s failed: %s", instance[0], exc)
                status = UNABLE_TO_PERFORM_SUBOPERATIONS
            progress.count(status)
            pending = response(message.command, PENDING_CODE)
            progress.fill(pending, final=False)
            self._send(message, pending)
        final_status = progress.final_status(cancelled or self._cancel_seen)
        final = response(message.command, final_status)
        progress.fill(final, final=True)
        self._send(message, final)
        return final_status

    def _note_cancel(self, message: Message):
        def on_other(incoming: Message) -> None:
            if incoming.command_field == C_CANCEL:
                self._cancel_seen = True
            else:
                raise ProtocolError(f"request 0x{incoming.command_field:04X} during a C-GET")

        return on_other

    def on_get(self, message: Message) -> int:
        instances = self._instances(message)
        if instances is None:
            return IDENTIFIER_DOES_NOT_MATCH
        self._cancel_seen = False

        def send_one(instance: tuple) -> int:
            context = retrieve.pick_context(self.assoc, instance[1], instance[2], as_scu_only=True)
            if context is None:
                log.warning("C-GET: no storage context with SCP role for %s in %s", instance[1], instance[2])
                return UNABLE_TO_PERFORM_SUBOPERATIONS
            return retrieve.send_instance(
                self.assoc, context, next(self.message_ids), instance, on_other=self._note_cancel(message)
            )

        return self._suboperations(message, instances, send_one)

    def on_move(self, message: Message) -> int:
        config = self.shared.config
        destination_ae = str(message.command.get("MoveDestination", "")).strip()
        destination = config.destinations.get(destination_ae)
        if destination is None:
            self._send(
                message,
                response(
                    message.command, MOVE_DESTINATION_UNKNOWN, ErrorComment=f"unknown destination {destination_ae}"[:64]
                ),
            )
            return MOVE_DESTINATION_UNKNOWN
        instances = self._instances(message)
        if instances is None:
            return IDENTIFIER_DOES_NOT_MATCH
        if not instances:
            return self._suboperations(message, [], lambda i: SUCCESS_CODE)
        try:
            sub = retrieve.open_destination(
                destination_ae,
                destination.host,
                destination.port,
                config.ae_title,
                instances,
                config.max_pdu,
                config.network_timeout,
            )
        except (AssociationRejected, OSError, ProtocolError, ConnectionClosed) as exc:
            log.warning("C-MOVE: cannot associate with %s: %s", destination_ae, exc)
            self._send(
                message,
                response(
                    message.command,
                    UNABLE_TO_PERFORM_SUBOPERATIONS,
                    ErrorComment=f"cannot reach {destination_ae}: {exc}"[:64],
                ),
            )
            return UNABLE_TO_PERFORM_SUBOPERATIONS
        sub_ids = iter(range(1, 1 << 16))
        originator = (self.assoc.calling_ae, int(message.command.MessageID))

        def send_one(instance: tuple) -> int:
            context = retrieve.pick_context(sub, instance[1], instance[2], as_scu_only=False)
            if context is None:
                return UNABLE_TO_PERFORM_SUBOPERATIONS
            return retrieve.send_instance(sub, context, next(sub_ids), instance, originator)

        try:
            return self._suboperations(message, instances, send_one)
        finally:
            sub.release()


def handle_connection(shared: Shared, sock: socket.socket, peer: tuple, counted: bool) -> None:
    try:
        AssociationHandler(shared, sock, peer).run(counted)
    except Exception:  # one association's bug must never take the worker down
        log.exception("association from %s failed", peer)
