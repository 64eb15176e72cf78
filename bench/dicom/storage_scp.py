"""The harness's own Storage SCP: where C-MOVE sends studies, and a null sink for calibration.

Accepts every storage SOP class in the transfer syntax the sender proposes first (so a
compressed instance arrives as it was stored) and Verification. Each received instance
becomes an Arrival, filed under the C-MOVE that caused it (Move Originator Message ID,
else its study) until the workstation that asked collects it.

Runs on the archive's upper layer (server_under_test.upper_layer), one thread per
association: real threads in a plain process, greenlets under locust (gevent patches
`threading` and `socket`). `python -m bench.dicom.storage_scp` runs it
alone (the calibration's null sink when DCMTK is not installed).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections import defaultdict

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import Verification

from bench.dicom.arrivals import Arrival, Gathered, InstanceCollector
from server_under_test.upper_layer.association import Association, NegotiationCache, accept
from server_under_test.upper_layer.dimse import C_ECHO, C_STORE, response
from server_under_test.upper_layer.messages import ReleaseRequested
from server_under_test.upper_layer.pdu import LinkLost, Wire
from server_under_test.upper_layer.status import SUCCESS_CODE, UNRECOGNIZED_OPERATION

SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    JPEGBaseline8Bit,  # ultrasound cine loops (the us profile)
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


def storage_contexts() -> list[PresentationContext]:
    contexts = []
    for abstract_syntax in [Verification, *(cx.abstract_syntax for cx in AllStoragePresentationContexts)]:
        cx = PresentationContext()
        cx.abstract_syntax = abstract_syntax
        cx.transfer_syntax = SYNTAXES
        contexts.append(cx)
    return contexts


class StorageSCP:
    """Listens on host:port as `ae_title` (the called AE is not checked: any name reaches it)."""

    def __init__(
        self,
        ae_title: str = "PACSBENCH-SCP",
        host: str = "127.0.0.1",
        port: int = 0,
        digests: bool = False,
        null_sink: bool = False,
        max_pdu: int = 0,
        timeout: float = 60.0,
    ):
        self.ae_title = ae_title
        self.digests = digests
        self.null_sink = null_sink  # count and acknowledge only: no header reading, nothing kept
        self.max_pdu = max_pdu
        self.timeout = timeout
        self.contexts = storage_contexts()
        self.negotiations = NegotiationCache()  # its own: the answers depend on the contexts supported
        self.listener = socket.create_server((host, port), backlog=128)
        self.host, self.port = self.listener.getsockname()[:2]
        self.instances = 0
        self._lock = threading.Lock()
        self._by_move: dict[int, Gathered] = defaultdict(Gathered)
        self._by_study: dict[str, Gathered] = defaultdict(Gathered)
        self._open: set[Association] = set()
        self._stopping = False

    def start(self) -> "StorageSCP":
        threading.Thread(target=self._accept_loop, name=f"scp-{self.port}", daemon=True).start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: stop() was called
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        wire = Wire(sock, self.timeout)
        try:
            assoc = accept(wire, self.ae_title, self.contexts, self.max_pdu, cache=self.negotiations)
        except Exception:  # cut off or undecodable negotiation: nothing to answer
            wire.close()
            return
        self._open.add(assoc)
        try:
            while True:
                self._answer(assoc)
        except ReleaseRequested:
            assoc.answer_release()
        except (LinkLost, OSError, ValueError):  # ValueError: stop() closed the socket under us
            assoc.abort()
        except Exception:  # a bug here must not leave the sender waiting for a response
            assoc.abort()
            raise
        finally:
            self._open.discard(assoc)

    def _answer(self, assoc: Association) -> None:
        reader = assoc.reader
        message = reader.read_command(greedy=True)
        command = message.command
        if command["CommandField"] == C_STORE:
            collector = InstanceCollector(self.digests, read_header=not self.null_sink)
            self._file(collector.receive(assoc, message))
            status = SUCCESS_CODE
        else:
            reader.skip_dataset(message)
            status = SUCCESS_CODE if command["CommandField"] == C_ECHO else UNRECOGNIZED_OPERATION
        answer = response(command, status, AffectedSOPInstanceUID=command.get("AffectedSOPInstanceUID"))
        assoc.send(message.context_id, answer)

    def _file(self, arrival: Arrival) -> None:
        with self._lock:
            self.instances += 1
            if self.null_sink:
                return
            if arrival.move_originator_id is not None:
                self._by_move[arrival.move_originator_id].add(arrival)
            else:
                self._by_study[arrival.study_instance_uid].add(arrival)

    def collect(self, move_message_id: int, study_instance_uid: str) -> Gathered:
        """What arrived for one C-MOVE (call after its final response: every sub-operation has been answered)."""
        with self._lock:
            return self._by_move.pop(move_message_id, Gathered()).merge(
                self._by_study.pop(study_instance_uid, Gathered())
            )

    def stop(self) -> None:
        self._stopping = True
        self.listener.close()
        for assoc in list(self._open):
            assoc.abort()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dicom.storage_scp",
        description="A Storage SCP that acknowledges and discards every instance.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--aet", default="NULLSINK")
    parser.add_argument("--max-pdu", type=int, default=16384, help="largest PDU received (default 16384, as storescp)")
    args = parser.parse_args(argv)
    scp = StorageSCP(args.aet, args.host, args.port, null_sink=True, max_pdu=args.max_pdu).start()
    print(f"bench.dicom.storage_scp listening on {scp.host}:{scp.port} as {args.aet}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    scp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
