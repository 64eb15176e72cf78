"""The `send` stage: every DICOM file under a folder, through the fast C-STORE path.

Files are scanned first (file meta, where the dataset starts, frames), then N
associations take files from a shared queue, each file's dataset read into memory and
streamed as gathered P-DATA-TF PDUs. Seconds run from the first association request to
the last release, as DCMTK's storescu is timed from process start to exit.

Plain threads, one per association: `send` runs outside locust, so sockets block in
the kernel and the GIL is released while bytes move.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from bench.common.errors import UserError
from bench.dicom.arrivals import HEAD_BYTES, header_facts
from bench.dicom.peer import AssociationFailed, Peer
from bench.dicom.scu import ServiceUser, storage_proposals
from server_under_test.upper_layer.status import is_done

MAX_ERRORS_KEPT = 5


@dataclass(frozen=True)
class FileInstance:
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    offset: int  # where the dataset starts, after the file meta group
    length: int
    frames: int

    def read_into(self, buffer: bytearray) -> memoryview:
        """The dataset bytes, read into `buffer` (grown if needed; reused: no fresh pages per file)."""
        if len(buffer) < self.length:
            buffer.extend(bytes(self.length - len(buffer)))
        view = memoryview(buffer)[: self.length]
        with self.path.open("rb", buffering=0) as f:
            f.seek(self.offset)
            got = 0
            while got < self.length:
                n = f.readinto(view[got:])
                if not n:
                    raise OSError(f"{self.path}: file ended early")
                got += n
        return view


def scan_file(path: Path) -> FileInstance | None:
    """The file as something to send, or None when it is not a DICOM Part 10 file."""
    try:
        meta = read_file_meta_info(path)
        offset = 132 + 12 + int(meta.FileMetaInformationGroupLength)
        syntax = str(meta.TransferSyntaxUID)
        sop_class, sop_instance = str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID)
    except (InvalidDicomError, AttributeError, ValueError, OSError):
        return None
    length = path.stat().st_size - offset
    with path.open("rb") as f:
        f.seek(offset)
        _, frames = header_facts(f.read(HEAD_BYTES), syntax)
    return FileInstance(path, sop_class, sop_instance, syntax, offset, length, frames)


def scan_folder(folder: Path) -> list[FileInstance]:
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    found = [scan_file(p) for p in sorted(folder.rglob("*")) if p.is_file()]
    files = [f for f in found if f is not None]
    if not files:
        raise UserError(f"no DICOM files (Part 10, with file meta) under {folder}")
    return files


@dataclass
class SendResult:
    instances: int = 0
    frames: int = 0
    bytes: int = 0
    failures: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def add(self, other: "SendResult") -> None:
        self.instances += other.instances
        self.frames += other.frames
        self.bytes += other.bytes
        self.failures += other.failures
        self.errors += other.errors[: MAX_ERRORS_KEPT - len(self.errors)]

    def rates(self) -> dict:
        seconds = max(self.seconds, 1e-9)
        return {
            "instances": self.instances,
            "seconds": round(self.seconds, 4),
            "instances_per_s": round(self.instances / seconds, 2),
            "frames_per_s": round(self.frames / seconds, 2),
            "mb_per_s": round(self.bytes / 1e6 / seconds, 2),
            "failures": self.failures,
        }

    def line(self) -> str:
        r = self.rates()
        return (
            f"{r['instances']} instances in {r['seconds']:.3f} s: {r['instances_per_s']:.1f} instances/s, "
            f"{r['frames_per_s']:.1f} frames/s, {r['mb_per_s']:.1f} MB/s, {r['failures']} failures"
        )


def _send_share(user: ServiceUser, work: queue.SimpleQueue, result: SendResult) -> None:
    """One association's loop: take files until none are left; re-associate after a failure.

    An association that cannot be (re)opened ends this share: the files it leaves in the
    queue go to the other associations, or count as failures at the end.
    """
    buffer = bytearray()
    while True:
        if not user.connected:
            try:
                user.connect()
            except AssociationFailed as exc:
                result.errors.append(str(exc))
                return
        try:
            item: FileInstance = work.get_nowait()
        except queue.Empty:
            break
        try:
            status = user.store(
                item.sop_class_uid, item.sop_instance_uid, item.transfer_syntax_uid, [item.read_into(buffer)]
            )
            error = "" if is_done(status) else f"{item.path}: C-STORE status 0x{status:04X}"
        except (AssociationFailed, OSError) as exc:
            error = f"{item.path}: {exc}"
        if error:
            result.failures += 1
            if len(result.errors) < MAX_ERRORS_KEPT:
                result.errors.append(error)
        else:
            result.instances += 1
            result.frames += item.frames
            result.bytes += item.length
    user.release()


def run_in_threads(jobs: list) -> float:
    """Run each job in its own thread (a greenlet under gevent); return the seconds until all ended."""
    threads = [threading.Thread(target=job) for job in jobs]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def send_files(
    files: list[FileInstance],
    peer: Peer,
    calling_ae: str = "PACSBENCH-SCU",
    associations: int = 1,
    max_pdu: int = 0,
    timeout: float = 30.0,
) -> SendResult:
    sop_classes = sorted({f.sop_class_uid for f in files})
    syntaxes = sorted({f.transfer_syntax_uid for f in files})
    proposals = storage_proposals(sop_classes, syntaxes)
    if len(proposals) > 128:
        raise UserError(
            f"{len(sop_classes)} SOP classes x {len(syntaxes)} transfer syntaxes need more than the "
            "128 presentation contexts one association can carry"
        )
    work: queue.SimpleQueue = queue.SimpleQueue()
    for item in files:
        work.put(item)
    shares = [SendResult() for _ in range(max(1, associations))]
    users = [ServiceUser(peer, calling_ae, proposals, max_pdu, timeout) for _ in shares]
    seconds = run_in_threads([lambda u=u, s=s: _send_share(u, work, s) for u, s in zip(users, shares)])
    total = SendResult(seconds=seconds)
    for share in shares:
        total.add(share)
    while not work.empty():  # no association was left to send these
        work.get_nowait()
        total.failures += 1
    return total
