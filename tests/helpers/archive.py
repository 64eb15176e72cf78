"""The reference archive as tests run it (a real process on a free port) and a pynetdicom client of it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
    XRayAngiographicImageStorage,
)

from bench.common.processes import stop_process
from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo as bench_wait_for_echo
from helpers import ROOT
from server_under_test.ready import NotReady, wait_for_ready
from server_under_test.storage.index import index_path

SERVER_MODULE = [sys.executable, "-m", "server_under_test"]
PACSBENCH_SERVE = [sys.executable, "-m", "bench.cli", "serve"]
XA = XRayAngiographicImageStorage
STARTED: list[RunningArchive] = []  # in start order; conftest stops the ones a test leaves running


class RunningArchive:
    """An archive a test started; every one is also listed in STARTED, so none outlives its test."""

    def __init__(
        self,
        process: subprocess.Popen,
        port: int,
        data: Path,
        ae_title: str,
        log: Path,
        metrics_url: str | None,
        dicomweb_url: str | None = None,
    ):
        self.process, self.port, self.data, self.ae_title = process, port, data, ae_title
        self.log, self.metrics_url, self.dicomweb_url = log, metrics_url, dicomweb_url

    @property
    def index(self) -> Path:
        return index_path(self.data)

    def stop(self) -> int:
        return stop_process(self.process, 30.0)


def start_archive(data: Path, *extra: str, ae_title: str = "PACSBENCH", command=SERVER_MODULE) -> RunningArchive:
    """The archive (or `pacsbench serve`) on a free port, its data in `data`, its log beside it.

    Where it listens comes from its ready file, as every caller learns it (server_under_test.ready).
    """
    data.parent.mkdir(parents=True, exist_ok=True)
    log = data.with_name(data.name + ".log")
    ready_file = data.with_name(data.name + ".ready.json")
    with log.open("ab") as output:  # a file, never a pipe nobody reads: a full pipe would stall the server
        process = subprocess.Popen(
            [*command, "--port", "0", "--aet", ae_title, "--data", str(data), "--ready-file", str(ready_file), *extra],
            stdout=output,
            stderr=output,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        ready = wait_for_ready(ready_file, process, 60.0)
    except NotReady as exc:
        stop_process(process, 10.0)
        raise RuntimeError(f"archive did not start: {exc}: {log.read_text()[-2000:]}") from None
    running = RunningArchive(process, ready.port, data, ae_title, log, ready.metrics_url, ready.dicomweb_url)
    STARTED.append(running)
    return running


def stop_archives_started_since(count: int) -> None:
    """Stop what a test started and left running (a fixture that failed before its own stop, say)."""
    while len(STARTED) > count:
        running = STARTED.pop()
        if running.process.poll() is None:
            running.stop()


def wait_for_echo(port: int, ae_title: str, timeout: float = 20.0) -> None:
    """Wait until the DICOM peer on a local port answers C-ECHO."""
    bench_wait_for_echo(Peer("127.0.0.1", port, ae_title), "PACSBENCH-TEST", timeout)


def client(archive: RunningArchive, calling="TESTSCU", get_role=False) -> tuple:
    """A pynetdicom association to the archive (XA storage, echo, find, get) and what C-GET sends back to it."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(XA, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    received = {}

    def on_store(event):
        received[event.request.AffectedSOPInstanceUID] = event.encoded_dataset(include_meta=False)
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        archive.port,
        ae_title=archive.ae_title,
        ext_neg=[build_role(XA, scp_role=True)] if get_role else None,
        evt_handlers=[(evt.EVT_C_STORE, on_store)] if get_role else None,
    )
    assert assoc.is_established
    return leave_responses_to_the_sender(assoc), received


def leave_responses_to_the_sender(assoc):
    """pynetdicom's association reactor (a thread) can take a response off the DIMSE queue in the instant between
    its pause check and a send_*() waiting for that response: the reactor logs "Received unexpected C-STORE
    service message" and the sender times out with an empty status (pynetdicom issues 435 and 875). A loaded
    machine widens that instant. Only the reactor reads the queue without blocking: let it take requests (C-GET's
    C-STORE sub-operations) and leave responses where the sender waits for them."""
    dimse = assoc.dimse
    take = dimse.get_msg

    def get_msg(block: bool = False):
        if not block:
            _, message = dimse.peek_msg()
            if message is not None and not message.is_valid_request:
                return None, None
        return take(block)

    dimse.get_msg = get_msg
    return assoc


def index_rows(archive: RunningArchive) -> dict[str, tuple[str, int]]:
    """The archive's index: SOP instance UID -> (file, tier)."""
    with sqlite3.connect(archive.index) as db:
        return {sop: (path, tier) for sop, path, tier in db.execute("SELECT sop_uid, path, tier FROM instance")}


def raw_request(calling: bytes = b"RAW", called: bytes = b"PACSBENCH", max_pdu: int = 16382) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification and XA storage, with AE title fields as given (raw bytes)."""
    from server_under_test.upper_layer.association import encode_request, proposed_context

    pdu = bytearray(
        encode_request(
            "X",
            "X",
            [proposed_context(Verification, [ExplicitVRLittleEndian]), proposed_context(XA, [ExplicitVRLittleEndian])],
            max_pdu,
        )
    )
    pdu[10:26], pdu[26:42] = called.ljust(16, b" "), calling.ljust(16, b" ")
    return bytes(pdu)


def assert_still_answers_echo(archive: RunningArchive, echoscu: str) -> None:
    """DCMTK's echoscu (a peer that is not ours) still gets its C-ECHO answered."""
    assert (
        subprocess.run(
            [echoscu, "-to", "10", "-aec", archive.ae_title, "127.0.0.1", str(archive.port)], timeout=30
        ).returncode
        == 0
    )
