"""Durable file storage on ordered tiers: an instance is on disk, complete, before anyone is told so.

Each file is written to a temporary name in its final folder, flushed and fsynced, then
moved into place (rename replaces atomically; link refuses to replace, for the
reject/keep-first duplicate policies) and the folder is fsynced so the name survives a
crash. Folders created on the way are fsynced into their parents too.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from pathlib import Path

from server_under_test.config import Tier

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_PREFIX = ".tmp-"


class BadUID(ValueError):
    """A UID that is not a valid DICOM UID (and must never become a path)."""


class AlreadyStored(FileExistsError):
    """The file exists and the policy says not to replace it."""


def check_uid(value: str, what: str) -> str:
    if not value or len(value) > 64 or not UID_PATTERN.match(value):
        raise BadUID(f"{what} is not a valid UID: {value!r}")
    return value


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writev_all(fd: int, chunks: list) -> int:
    views = [memoryview(c).cast("B") for c in chunks if len(c)]
    size = 0
    while views:
        written = os.writev(fd, views[:1024])
        size += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return size


class FileStore:
    """Files under root/<study>/<series>/<sop>.dcm, written atomically."""

    def __init__(self, root: Path, fsync: bool = True):
        self.root = root
        self.fsync = fsync
        self.incoming_dir = root / ".incoming"
        self.incoming_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (
            self.root
            / check_uid(study_uid, "StudyInstanceUID")
            / check_uid(series_uid, "SeriesInstanceUID")
            / f"{check_uid(sop_uid, 'SOPInstanceUID')}.dcm"
        )

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists() and folder != self.root:
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue
            if self.fsync:
                fsync_path(new.parent)

    def write(self, path: Path, chunks: list, replace: bool = True) -> int:
        """Write the chunks to `path` atomically; return the size in bytes."""
        return self._atomic(path, lambda fd: _writev_all(fd, chunks), replace)

    def copy_in(self, source: Path, path: Path) -> int:
        """Copy a file (from another tier) to `path` atomically; return the size in bytes."""
        def copy(fd: int) -> int:
            with open(source, "rb") as src:
                total = 0
                while block := src.read(4 << 20):
                    total += _writev_all(fd, [block])
                return total
        return self._atomic(path, copy, replace=True)

    def _atomic(self, path: Path, fill, replace: bool) -> int:
        temp = self.incoming_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                size = fill(fd)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self.commit(temp, path, replace)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return size

    def incoming(self, header: bytes) -> "IncomingFile":
        return IncomingFile(self, header)

    def commit(self, temp: Path, path: Path, replace: bool, sync_folder: bool = True) -> None:
        """Move a complete (fsynced) temp file to its final name; fsync the folder unless told
        the caller will (the index committer does it once for a whole batch)."""
        self._make_dirs(path.parent)
        if replace:
            os.rename(temp, path)
        else:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise AlreadyStored(errno.EEXIST, "already stored", str(path)) from None
            os.unlink(temp)
        if self.fsync and sync_folder:
            fsync_path(path.parent)

    def remove(self, path: Path) -> None:
        """Delete a file and the folders it leaves empty (up to the store root)."""
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    def remove_leftover_temp_files(self) -> int:
        """Delete temp files a crash left behind (they were never acknowledged)."""
        count = 0
        for temp in self.root.rglob(f"{TEMP_PREFIX}*"):
            temp.unlink(missing_ok=True)
            count += 1
        return count


class IncomingFile:
    """A C-STORE dataset streamed to disk as it arrives, under a temporary name.

    Write errors (a full disk) are remembered, not raised: the rest of the dataset must
    still be read off the wire before the failure status can be sent.
    """

    def __init__(self, store: FileStore, header: bytes):
        self.store = store
        self.path = store.incoming_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        self.header_size = len(header)
        self.size = 0
        self.error: OSError | None = None
        self.fd: int | None = None
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self.write([header])
        except OSError as exc:
            self.error = exc

    def write(self, chunks: list) -> None:
        if self.error is None:
            try:
                self.size += _writev_all(self.fd, chunks)
            except OSError as exc:
                self.error = exc

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.path.unlink(missing_ok=True)

    def commit(self, path: Path, replace: bool, sync_folder: bool = True) -> int:
        """fsync, close and move into place; return the file size. Discards itself on failure."""
        try:
            if self.store.fsync:
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            self.store.commit(self.path, path, replace, sync_folder)
        except BaseException:
            self.discard()
            raise
        return self.size


class TierSet:
    """The ordered storage tiers; new instances go to the first tier with room."""

    def __init__(self, tiers: tuple[Tier, ...], fsync: bool):
        self.tiers = tiers
        self.stores = [FileStore(t.path, fsync) for t in tiers]

    def candidates(self, usage: dict[int, tuple[int, int]]) -> list[int]:
        """Tier numbers to try, in order: those not yet at capacity."""
        out = []
        for number, tier in enumerate(self.tiers):
            used = usage.get(number, (0, 0))[0]
            if tier.capacity == 0 or used < tier.capacity:
                out.append(number)
        return out

    def store_for_path(self, path: Path) -> FileStore | None:
        for store in self.stores:
            if path.is_relative_to(store.root):
                return store
        return None
