"""A null source for calibrating retrieval: answers C-GET and C-MOVE with fresh pool copies, no disk.

The retrieval twin of calibration's null sink. Whatever study is asked for, it sends one pool
study (new UIDs each time, the pre-encoded chunks as the modalities send them) as C-STORE
sub-operations: on the requestor's association for a C-GET, to the one destination it was
given for a C-MOVE. Nothing is read from disk and nothing is indexed, so the rate the
harness reaches against it is the harness's own receiving ceiling. It runs as its own
process (`python -m bench.load.retrieval_source`), so it does not share the harness's core.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading

from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from server_under_test.services.connection import supported_contexts
from server_under_test.services.retrieve import Progress
from server_under_test.upper_layer.association import Association, accept, proposed_context, request
from server_under_test.upper_layer.dimse import C_ECHO, C_GET, C_MOVE, C_STORE, RESPONSE, response, store_request
from server_under_test.upper_layer.messages import ReleaseRequested
from server_under_test.upper_layer.pdu import LinkLost, Wire
from server_under_test.upper_layer.status import PENDING_CODE, SUCCESS_CODE, UNRECOGNIZED_OPERATION

SOURCE_AE = "NULLSOURCE"


class RetrievalSource:
    """Listens on 127.0.0.1:`port`; C-MOVE destinations all go to `destination` (host, port)."""

    def __init__(self, pool: StudyPool, port: int, destination: tuple[str, int] | None):
        self.pool, self.destination = pool, destination
        self.contexts = supported_contexts()
        self.listener = socket.create_server(("127.0.0.1", port), backlog=16)
        self._lock = threading.Lock()  # the pool hands out copies one study at a time

    def serve_forever(self) -> None:
        while True:
            sock, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        wire = Wire(sock, 60.0)
        try:
            assoc = accept(wire, SOURCE_AE, self.contexts, 0)
        except Exception:  # a cut-off negotiation: nothing to answer
            wire.close()
            return
        try:
            while True:
                self._answer(assoc)
        except ReleaseRequested:
            assoc.answer_release()
        except (LinkLost, OSError, ValueError):
            assoc.abort()

    def _study(self) -> list:
        with self._lock:
            return self.pool.next_study()

    def _answer(self, assoc: Association) -> None:
        message = assoc.reader.read()
        command = message.command
        field = command["CommandField"]
        if field == C_GET:
            final = self._send_study(assoc, assoc, command, originator=None)
        elif field == C_MOVE and self.destination:
            destination = request(
                *self.destination, SOURCE_AE, command["MoveDestination"].strip(), self._store_contexts(), 0, 60.0
            )
            try:
                final = self._send_study(destination, assoc, command, (assoc.calling_ae, command["MessageID"]))
            finally:
                destination.release()
        else:
            final = response(command, SUCCESS_CODE if field == C_ECHO else UNRECOGNIZED_OPERATION)
        assoc.send(message.context_id, final)

    def _store_contexts(self) -> list:
        pool = self.pool
        return [proposed_context(c, [s]) for c in pool.sop_classes for s in pool.transfer_syntaxes]

    def _send_study(self, to: Association, requestor: Association, command, originator) -> object:
        """Each copy of one pool study as a C-STORE sub-operation on `to`; the final response's command."""
        copies = self._study()
        progress = Progress(len(copies))
        context_id = requestor.context_id(command["AffectedSOPClassUID"])
        for number, copy in enumerate(copies, start=1):
            cx = to.context_id(copy.sop_class_uid, copy.transfer_syntax_uid)
            to.send(
                cx, store_request(number, copy.sop_class_uid, copy.sop_instance_uid, originator), copy.encoded_chunks()
            )
            answer = to.reader.read().command
            if answer["CommandField"] != C_STORE | RESPONSE:
                raise LinkLost("unexpected DIMSE message during a sub-operation")
            progress.count(answer["Status"])
            pending = response(command, PENDING_CODE)
            progress.fill(pending, final=False)
            requestor.send(context_id, pending)
        final = response(command, progress.final_status(cancelled=False))
        progress.fill(final, final=True)
        return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load.retrieval_source", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--transfer-syntax", default=None)
    parser.add_argument("--destination", default=None, metavar="HOST:PORT", help="where every C-MOVE goes")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pool = StudyPool.prepare(load_profile(args.profile), 2, 1, progress=False, transfer_syntax=args.transfer_syntax)
    destination = None
    if args.destination:
        host, port = args.destination.rsplit(":", 1)
        destination = (host, int(port))
    RetrievalSource(pool, args.port, destination).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
