"""The reference archive's DICOM service: C-ECHO and C-STORE over pynetdicom.

A C-STORE is acknowledged with success only after the file is fsynced and renamed into
place and its index row is committed. Failures map to DICOM statuses: A700 (out of
resources: disk full, I/O error), A900 (dataset does not match: missing or bad UIDs),
C210 (cannot understand: the dataset does not parse).
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from server_under_test import __version__
from server_under_test.index import Index, InstanceRecord
from server_under_test.storage import BadUID, FileStore

log = logging.getLogger("server_under_test")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210

# Uncompressed syntaxes plus the lossless ones XA modalities send. Kept deliberately
# short: pynetdicom copies every supported context for every association.
ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
]


@dataclass(frozen=True)
class ServerConfig:
    ae_title: str = "PACSBENCH"
    host: str = "127.0.0.1"
    port: int = 11112
    data: Path = Path("archive-data")
    max_associations: int = 32
    max_pdu: int = 0  # 0 = unlimited: peers send each dataset in as few PDUs as they like
    backlog: int = 128
    fsync: bool = True


class ArchiveServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a listen backlog sized for many clients."""

    request_queue_size = 128

    def shutdown(self) -> None:
        # The base class also unregisters from ae._servers, where make_server() never put us.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _int_or_none(ds, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class StorageService:
    """Handles C-STORE requests: parse keys, write the file, index it, answer."""

    def __init__(self, store: FileStore, index: Index):
        self.store = store
        self.index = index

    def on_store(self, event) -> int:
        try:
            encoded = event.encoded_dataset(include_meta=True)
            ds = dcmread(BytesIO(encoded), stop_before_pixels=True)
            study_uid, series_uid, sop_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        except (InvalidDicomError, AttributeError, ValueError, EOFError, KeyError, TypeError) as exc:
            log.warning("C-STORE from %s refused (C210): dataset does not parse: %s", event.assoc.requestor.ae_title, exc)
            return CANNOT_UNDERSTAND
        if sop_uid != event.request.AffectedSOPInstanceUID:
            log.warning("C-STORE refused (A900): SOPInstanceUID %s differs from the request's %s",
                        sop_uid, event.request.AffectedSOPInstanceUID)
            return DATASET_DOES_NOT_MATCH
        try:
            path = self.store.path_for(study_uid, series_uid, sop_uid)
        except BadUID as exc:
            log.warning("C-STORE refused (A900): %s", exc)
            return DATASET_DOES_NOT_MATCH
        try:
            size = self.store.write(path, [encoded])
        except OSError as exc:
            reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            log.error("C-STORE refused (A700): cannot write %s: %s", path, reason)
            return OUT_OF_RESOURCES
        record = self._record(ds, event, path, size)
        try:
            self.index.add(record)
        except Exception as exc:  # sqlite3.Error, OSError: never leave a file the index does not know
            path.unlink(missing_ok=True)
            log.error("C-STORE refused (A700): index update failed for %s: %s", sop_uid, exc)
            return OUT_OF_RESOURCES
        return SUCCESS

    @staticmethod
    def _record(ds, event, path: Path, size: int) -> InstanceRecord:
        return InstanceRecord(
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex"),
            study_uid=ds.StudyInstanceUID,
            study_date=_text(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime"),
            accession=_text(ds, "AccessionNumber"),
            study_id=_text(ds, "StudyID"),
            study_description=_text(ds, "StudyDescription"),
            series_uid=ds.SeriesInstanceUID,
            modality=_text(ds, "Modality"),
            series_number=_int_or_none(ds, "SeriesNumber"),
            body_part=_text(ds, "BodyPartExamined"),
            sop_uid=ds.SOPInstanceUID,
            sop_class_uid=str(event.request.AffectedSOPClassUID),
            instance_number=_int_or_none(ds, "InstanceNumber"),
            transfer_syntax=str(event.context.transfer_syntax),
            frames=_int_or_none(ds, "NumberOfFrames") or 1,
            size=size,
            path=str(path),
        )


def _set_nodelay(event) -> None:
    """Disable Nagle on every accepted connection: otherwise each response waits ~40 ms."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def build_ae(config: ServerConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ACCEPTED_TRANSFER_SYNTAXES)
    return ae


class Archive:
    """The running archive: store, index and the listening DICOM server."""

    def __init__(self, config: ServerConfig):
        self.config = config
        config.data.mkdir(parents=True, exist_ok=True)
        self.store = FileStore(config.data / "storage", fsync=config.fsync)
        removed = self.store.remove_leftover_temp_files()
        if removed:
            log.info("removed %d unacknowledged temp files left by an earlier crash", removed)
        self.index = Index(config.data / "index.sqlite", synchronous="FULL" if config.fsync else "OFF")
        self.service = StorageService(self.store, self.index)
        self.ae = build_ae(config)
        handlers = [(evt.EVT_C_STORE, self.service.on_store), (evt.EVT_CONN_OPEN, _set_nodelay)]
        self.server = self.ae.make_server(
            (config.host, config.port), evt_handlers=handlers, server_class=ArchiveServer
        )
        self.thread = threading.Thread(target=self.server.serve_forever, name="dicom-accept", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self, grace_seconds: float = 30.0) -> None:
        """Stop accepting, let in-flight associations finish (bounded), close the index."""
        self.server.shutdown()
        deadline = time.monotonic() + grace_seconds
        while self.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.server.active_associations:
            assoc.abort()
        self.index.close()


def parse_args(argv: list[str] | None, prog: str = "python -m server_under_test") -> ServerConfig:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="pacsbench reference archive: a DICOM Storage SCP (C-ECHO, C-STORE) that writes "
        "each instance durably (temp file, fsync, rename) and indexes it in SQLite before answering.",
    )
    d = ServerConfig()
    parser.add_argument("--aet", default=d.ae_title, help=f"AE title to answer as (default {d.ae_title})")
    parser.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host}; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=d.port, help=f"TCP port (default {d.port}; 0 picks a free one)")
    parser.add_argument("--data", type=Path, default=d.data, help="folder for storage/ and index.sqlite")
    parser.add_argument("--max-associations", type=int, default=d.max_associations, help="concurrent associations")
    parser.add_argument("--max-pdu", type=int, default=d.max_pdu, help="maximum PDU size we receive (0 = unlimited)")
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync (experiments only: not durable)")
    args = parser.parse_args(argv)
    return ServerConfig(
        ae_title=args.aet, host=args.host, port=args.port, data=args.data,
        max_associations=args.max_associations, max_pdu=args.max_pdu, fsync=not args.no_fsync,
    )


def main(argv: list[str] | None = None, prog: str = "python -m server_under_test") -> int:
    config = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        archive = Archive(config)
    except OSError as exc:
        print(f"server_under_test: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    archive.start()
    # The harness reads this line to learn the port (with --port 0) and that we are up.
    print(
        f"server_under_test {__version__} listening on {config.host}:{archive.port} AE {config.ae_title} "
        f"data {config.data} fsync {'on' if config.fsync else 'off'}",
        flush=True,
    )
    stop.wait()
    log.info("stopping: finishing in-flight associations")
    archive.stop()
    return 0
