"""Durable file storage on ordered tiers: an instance is on disk, complete, before anyone is told so.

A received file is written without a name (O_TMPFILE, in the tier's .incoming folder), then linked under its final
name and fsynced, and the folder is fsynced so the name survives a crash: for a received instance, by the index's
group commit, once per folder for a whole group of stores, before the row that names the file is committed. On ext4
and XFS the file's own fsync already makes a name it was linked under before durable (the folder needs no fsync of
its own): there the folder's fsync is skipped. A crash
before that leaves at most a file no index row names, which a store of the same instance replaces. Over a name that
exists (the overwrite policy, or a file a crash left), the file is linked under a temporary name beside it, fsynced,
and only then renamed over the old one, which is never lost to a file not yet on disk. Folders created on the way
are fsynced into their parents too.

Why no temporary name: creating a named file, fsyncing it and unlinking its name each change the folder that held
it, and an ext4 fsync of a new file writes that folder's block too, holding it while the device writes. With every
store's temporary file in one folder, each create waited for the other stores' fsyncs (strace, 4 CT associations:
0.63 ms per openat), and every fsync wrote one more block. Where the file system has no O_TMPFILE, files get a
temporary name in .incoming, are fsynced there and then moved into place, as before.

Received datasets are written with O_DIRECT where the file system allows it: the bytes go
from one reused, aligned buffer straight to the device instead of through the page cache.
Why: an archive writes each instance once and rarely reads it back soon, so caching it
only evicts what readers need; and filling fresh page-cache pages is expensive, above all in
a VM whose freed pages go back to the host (measured here: 7 ms and 5 ms of CPU to write
2 MB through the page cache, 0.7 ms of CPU with O_DIRECT). Where a file system refuses
O_DIRECT (some FUSE and network file systems, tmpfs before Linux 6.6), files go through the
page cache as before; /status says per tier which way is in effect.

A received file whose size is not a multiple of the 4 KB block is padded to one with a Data Set Trailing Padding
element (FFFC,FFFC), which PS3.10 allows at the end of a file for this purpose, so that its last block goes to the
device in the same O_DIRECT write as the rest. Without it, the last partial block went through the page cache and
was written by the fsync as a request of its own, one more device round trip in every store (traced, CT ingest:
device requests 8.0 -> 7.2 per instance, throughput 1.06x). The padding's value ends with PADDING_MARK and the length
received, so received_length() finds what was received and retrieval sends exactly those bytes. Not for deflated
datasets (no element can follow the deflated stream) or an odd length (not a valid dataset).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import struct
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from server_under_test.config import Tier
from server_under_test.environment import file_system

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_PREFIX = ".tmp-"
DIRECT_ALIGNMENT = 4096  # offsets, lengths and buffer addresses of O_DIRECT writes (covers 512 B and 4 KB sectors)
STAGING_BUFFER = 1 << 20  # bytes staged per write
# File systems on which fsync of a file also makes durable the name it was linked under before: ext4 with a journal
# (the link is in the transaction the fsync commits), ext4 without one (its fsync of a new entry writes the folder:
# ext4_sync_parent; traced here, the folder's fsync after it wrote nothing but one more cache flush), XFS (the log
# force covers the transaction that made the link). Elsewhere (btrfs, NFS, FUSE: not verified) the folder is fsynced.
NAME_DURABLE_WITH_FILE = frozenset({"ext4", "xfs"})
TRAILING_PADDING = 0xFFFCFFFC  # Data Set Trailing Padding, the tag of the padding element
PADDING_MARK = b"PACSBENCH-PADDED"  # at the end of the trailing padding this archive adds, before the length received
PADDING_TRAILER = len(PADDING_MARK) + 8
IMPLICIT_LITTLE, EXPLICIT_BIG, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"


def trailing_padding(length: int, transfer_syntax: str) -> bytes | None:
    """A Data Set Trailing Padding element that takes a file of `length` bytes to a multiple of DIRECT_ALIGNMENT,
    ending with PADDING_MARK and `length`; None where none may be added."""
    if transfer_syntax == DEFLATED or length % 2:
        return None
    if transfer_syntax == IMPLICIT_LITTLE:
        head_format, head_size = "<HHI", 8
    else:  # explicit VR: little endian, or big endian (every compressed syntax is explicit VR little endian)
        head_format, head_size = (">HH2sHI" if transfer_syntax == EXPLICIT_BIG else "<HH2sHI"), 12
    room = -length % DIRECT_ALIGNMENT
    if room < head_size + PADDING_TRAILER:
        room += DIRECT_ALIGNMENT
    value = room - head_size  # even: `length` and the block are
    fields = (0xFFFC, 0xFFFC, value) if head_size == 8 else (0xFFFC, 0xFFFC, b"OB", 0, value)
    return (
        struct.pack(head_format, *fields) + bytes(value - PADDING_TRAILER) + PADDING_MARK + length.to_bytes(8, "little")
    )


def received_length(fd: int) -> int:
    """The bytes a stored file held as received: its size, less the trailing padding this archive added."""
    size = os.fstat(fd).st_size
    if size % DIRECT_ALIGNMENT or size < PADDING_TRAILER:
        return size
    tail = os.pread(fd, PADDING_TRAILER, size - PADDING_TRAILER)
    if tail[: len(PADDING_MARK)] != PADDING_MARK:
        return size
    length = int.from_bytes(tail[len(PADDING_MARK) :], "little")
    return length if size - 2 * DIRECT_ALIGNMENT < length < size else size


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


def supports_unnamed_files(folder: Path) -> bool:
    """Can files be made without a name in `folder` and named later (O_TMPFILE: Linux 3.11 on, most local file
    systems; naming them needs /proc)?"""
    probe = folder / f"{TEMP_PREFIX}probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except (OSError, AttributeError):
        return False
    try:
        link_unnamed(fd, probe)
    except OSError:
        return False
    finally:
        os.close(fd)
    probe.unlink()
    return True


def link_unnamed(fd: int, path: Path) -> None:
    """Name an O_TMPFILE file: linkat(2) of /proc/self/fd/N with AT_SYMLINK_FOLLOW. (os.link calls linkat, not link,
    only when given a folder descriptor; link(2) would try to link the /proc entry itself.)"""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


def supports_direct_io(folder: Path) -> bool:
    """Does this file system accept O_DIRECT writes (tmpfs, for one, does not)?"""
    probe = folder / f"{TEMP_PREFIX}probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError:
        return False
    try:
        with mmap.mmap(-1, DIRECT_ALIGNMENT) as block:
            return os.write(fd, block) == DIRECT_ALIGNMENT
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


_staging = threading.local()


def _take_staging_buffer() -> mmap.mmap:
    """A page-aligned buffer for O_DIRECT writes; each thread reuses its own, so their pages stay mapped."""
    free = getattr(_staging, "free", None)
    if free is None:
        free = _staging.free = []
    return free.pop() if free else mmap.mmap(-1, STAGING_BUFFER)


def _give_back_staging_buffer(buffer: mmap.mmap) -> None:
    free = getattr(_staging, "free", None)
    if free is None:
        free = _staging.free = []
    if len(free) < 4:
        free.append(buffer)


_write_behind: ThreadPoolExecutor | None = None


def _write_behind_pool() -> ThreadPoolExecutor:
    """Threads that write full buffers while the connection thread receives into the other one."""
    global _write_behind
    if _write_behind is None:
        _write_behind = ThreadPoolExecutor(max_workers=16, thread_name_prefix="write-behind")
    return _write_behind


def _forget_write_behind_pool() -> None:  # a forked worker must not use its parent's (thread-less) pool
    global _write_behind
    _write_behind = None


os.register_at_fork(after_in_child=_forget_write_behind_pool)


def _pwrite_all(fd: int, view: memoryview, offset: int, direct: bool) -> None:
    done = 0
    while done < len(view):
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0 or (direct and written % DIRECT_ALIGNMENT and done + written < len(view)):
            raise OSError(errno.EIO, f"short write: {written} of {len(view) - done} bytes")
        done += written


class StagedWriter:
    """Appends to a file through two reused staging buffers, a megabyte per write.

    Callers receive straight into a buffer (space, then advance), which is how C-STORE datasets arrive without a copy in
    user space. A full buffer is written by a write-behind thread while the caller fills the other, so the disk and the
    network work at the same time. With O_DIRECT the buffers are page-aligned and every write a multiple of the
    alignment, but for the last partial block, which finish() writes through the page cache. The first `keep_head`
    bytes are kept (the file meta and the attributes the index needs) before they leave.

    `offset` counts the bytes known to be on disk; a write-behind that failed is redone
    in the caller's thread by the next space() or finish(), after the caller has had a
    chance to move the file elsewhere (a full tier).
    """

    def __init__(self, fd: int | None, direct: bool, keep_head: int = 0, transfer_syntax: str | None = None):
        self.fd = fd
        self.direct = direct
        self.keep_head = keep_head
        self.transfer_syntax = transfer_syntax  # of the dataset (a received file): its last block may be padded
        self.padded = 0  # bytes of trailing padding written after what was received
        self.head = b""
        self._buffers = [_take_staging_buffer(), _take_staging_buffer()]
        self._current = 0
        self.view = memoryview(self._buffers[0])
        self.staged = 0
        self.offset = 0
        self._pending = None  # (future or None when it must be redone here, view)

    def space(self) -> memoryview:
        """Free room in the current buffer (never empty: a full buffer is handed on first)."""
        if self.staged == len(self.view):
            self._hand_over()
        return self.view[self.staged :]

    def advance(self, count: int) -> None:
        self.staged += count

    def finish(self) -> None:
        self._complete_pending()
        if not self.staged:
            return
        self._keep_head()
        if not self.direct:
            _pwrite_all(self.fd, self.view[: self.staged], self.offset, False)
            self.offset += self.staged
            self.staged = 0
            return
        aligned = self.staged - self.staged % DIRECT_ALIGNMENT
        if aligned < self.staged and self._pad():
            return
        if aligned:
            _pwrite_all(self.fd, self.view[:aligned], self.offset, True)
        if aligned < self.staged:
            # Without padding, the last partial block goes through the page cache: cutting a padded file back with
            # ftruncate would read that block back and write it again. The file is complete after this, so O_DIRECT
            # is off for good.
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            _pwrite_all(self.fd, self.view[aligned : self.staged], self.offset + aligned, False)
        self.offset, self.staged = self.offset + self.staged, 0

    def _pad(self) -> bool:
        """Write what is staged with a trailing padding element, in one O_DIRECT write; False where none fits."""
        padding = self.transfer_syntax and trailing_padding(self.offset + self.staged, self.transfer_syntax)
        if not padding or self.staged + len(padding) > len(self.view):
            return False
        end = self.staged + len(padding)
        self.view[self.staged : end] = padding
        _pwrite_all(self.fd, self.view[:end], self.offset, True)
        self.offset, self.staged, self.padded = self.offset + end, 0, len(padding)
        return True

    def drop_staged(self) -> None:
        """Forget what is staged (after a write error the rest is only read off the wire)."""
        self._forget_pending()
        self.staged = 0

    def close(self) -> None:
        if self._buffers:
            self._forget_pending()
            self.view = None
            for buffer in self._buffers:
                _give_back_staging_buffer(buffer)
            self._buffers = []

    def _forget_pending(self) -> None:
        if self._pending and self._pending[0] is not None:
            try:  # its buffer may be reused only once the write is over
                self._pending[0].result()
            except OSError:
                pass
        self._pending = None

    def _keep_head(self) -> None:
        if self.offset == 0 and self._pending is None and self.keep_head:
            self.head = bytes(self.view[: min(self.staged, self.keep_head)])

    def _complete_pending(self) -> None:
        """Wait for the write-behind; redo a failed one here (raising if it fails again)."""
        if self._pending is None:
            return
        future, view = self._pending
        if future is not None:
            try:
                future.result()
            except OSError:
                self._pending = (None, view)
                raise
        else:
            _pwrite_all(self.fd, view, self.offset, self.direct)
        self._pending = None
        self.offset += len(view)

    def _hand_over(self) -> None:
        self._complete_pending()
        self._keep_head()
        full = self.view
        future = _write_behind_pool().submit(_pwrite_all, self.fd, full, self.offset, self.direct)
        self._pending = (future, full)
        self._current ^= 1
        self.view = memoryview(self._buffers[self._current])
        self.staged = 0


class FileStore:
    """Files under root/<study>/<series>/<sop>.dcm, written atomically."""

    def __init__(self, root: Path, fsync: bool = True, direct_io: bool = True):
        self.root = root
        self.fsync = fsync
        self.incoming_dir = root / ".incoming"
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.direct_io = direct_io and supports_direct_io(self.incoming_dir)
        self.unnamed = supports_unnamed_files(self.incoming_dir)
        self.file_system = file_system(root)

    @property
    def names_durable_with_files(self) -> bool:
        """Does a file's fsync make its new name durable? (Only unnamed files get their name before their fsync.)"""
        return self.unnamed and self.file_system in NAME_DURABLE_WITH_FILE

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

    def copy_in(self, source: Path, path: Path) -> int:
        """Copy a file (from another tier) to `path` atomically; return the size in bytes."""
        incoming = IncomingFile(self, b"")
        with open(source, "rb") as src:
            while block := src.read(4 << 20):
                incoming.write([block])
        if incoming.error is not None:
            incoming.discard()
            raise incoming.error
        return incoming.commit(path, replace=True)

    def incoming(
        self, header: bytes, keep_head: int = 0, overflow: tuple = (), transfer_syntax: str | None = None
    ) -> "IncomingFile":
        """A file to receive into; `transfer_syntax` (a dataset's, after its file meta `header`): pad its end."""
        return IncomingFile(self, header, keep_head, overflow, transfer_syntax)

    def commit(self, temp: Path, path: Path, replace: bool, sync_folder: bool = True) -> bool:
        """Move a complete (fsynced) temp file to its final name; fsync the folder unless told
        the caller will (the index committer does it once for a whole group). True: the name is durable."""
        return self._into_folder(lambda: self._place(temp, path, replace), path, sync_folder)

    def name(self, fd: int, path: Path, replace: bool, sync_folder: bool = True) -> bool:
        """Give an unnamed, complete file (IncomingFile with O_TMPFILE) the name `path` and fsync it; fsync the folder
        unless told the caller will, or the file's fsync already made the new name durable. Over an existing name
        (replace) it is first linked under a temporary name beside it and fsynced, then renamed over the old file.
        True: the name is durable (False: the caller fsyncs the folder). AlreadyStored: the name is taken and
        `replace` is off."""
        return self._into_folder(lambda: self._name(fd, path, replace), path, sync_folder)

    def _into_folder(self, place, path: Path, sync_folder: bool) -> bool:
        try:
            durable = place()
        except FileNotFoundError:  # recycling removed the study's emptied folders between mkdir and link: again
            durable = place()
        if not self.fsync or durable:
            return True
        if sync_folder:
            fsync_path(path.parent)
        return sync_folder

    def _name(self, fd: int, path: Path, replace: bool) -> bool:
        """Link and fsync; True when that fsync made the name durable too."""
        self._make_dirs(path.parent)
        try:
            link_unnamed(fd, path)
        except FileExistsError:
            if not replace:
                raise AlreadyStored(errno.EEXIST, "already stored", str(path)) from None
            self._replace_with(fd, path)
            return False  # renamed after the fsync: the folder's fsync makes it durable
        try:
            self._sync(fd)
        except BaseException:  # a name for a file that may not be on disk: never leave it
            path.unlink(missing_ok=True)
            raise
        return self.names_durable_with_files

    def _replace_with(self, fd: int, path: Path) -> None:
        temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        link_unnamed(fd, temp)
        try:
            self._sync(fd)
            os.rename(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _sync(self, fd: int) -> None:
        if self.fsync:
            os.fsync(fd)

    def _place(self, temp: Path, path: Path, replace: bool) -> bool:
        """Move the fsynced temp file to `path`; False: the move is durable only once the folder is fsynced."""
        self._make_dirs(path.parent)
        if replace:
            os.rename(temp, path)
        else:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise AlreadyStored(errno.EEXIST, "already stored", str(path)) from None
            os.unlink(temp)
        return False

    def lock_placed(self, path: Path) -> int | None:
        """Wait until no store is placing the file under `path` (IncomingFile.commit(hold=True)) and return an open,
        locked descriptor of it to close later; None when the file is gone. A file a crash left has no holder."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

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


FULL = (errno.ENOSPC, errno.EDQUOT)


class IncomingFile:
    """A file streamed to disk as it arrives, under a temporary name, until commit or discard.

    It is a sink for MessageReader.stream_dataset (space and advance, or write for bytes
    already in memory). When its file system
    fills up mid-stream and `overflow` names further stores (the next tiers), the bytes
    written so far are copied there and the stream carries on; the store it ends on is
    `store`. Other write errors are remembered, not raised: the rest of a C-STORE dataset
    must still be read off the wire before the failure status can be sent.
    """

    def __init__(
        self,
        store: FileStore,
        header: bytes,
        keep_head: int = 0,
        overflow: tuple = (),
        transfer_syntax: str | None = None,
    ):
        self.store = store
        self.overflow = list(overflow)
        self.path = store.incoming_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        self.header_size = len(header)
        self.received = 0  # bytes written by the caller (the header included)
        self.error: OSError | None = None
        self.fd: int | None = None
        self.name_durable = False  # after commit: False when the caller still has to fsync the folder
        self._writer = StagedWriter(None, store.direct_io, keep_head and len(header) + keep_head, transfer_syntax)
        self.unnamed = store.unnamed  # no name until commit (O_TMPFILE); `path` then reaches it through /proc
        try:
            self.fd = self._writer.fd = self._open(store, self.path)
            if self.unnamed:
                self.path = Path(f"/proc/self/fd/{self.fd}")
        except OSError as exc:
            if not (exc.errno in FULL and self._move_to_next_tier()):
                self.error = exc
        self.write([header])

    @staticmethod
    def _open(store: FileStore, path: Path) -> int:
        direct = os.O_DIRECT if store.direct_io else 0
        if store.unnamed:
            return os.open(store.incoming_dir, os.O_TMPFILE | os.O_WRONLY | direct, 0o644)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | direct, 0o644)

    def _move_to_next_tier(self) -> bool:
        """The file system is full: continue on the next store with room, bytes written so far included."""
        written = self._writer.offset
        while self.overflow:
            store = self.overflow.pop(0)
            path = store.incoming_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError:
                continue
            try:
                if written:  # (nothing yet when the full disk refused to even create the file)
                    with open(self.path, "rb") as source:
                        copied = 0
                        while copied < written:
                            block = source.read(min(4 << 20, written - copied))
                            if not block:
                                raise OSError(errno.EIO, "the partial file is shorter than what was written")
                            copied += os.write(fd, block)
                if store.direct_io:  # the rest is appended at aligned offsets, as before
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
            except OSError:
                os.close(fd)
                path.unlink(missing_ok=True)
                continue
            if self.fd is not None:
                os.close(self.fd)
                self._unlink_temp()
            self.store, self.path, self.fd, self.unnamed = store, path, fd, False
            self._writer.fd, self._writer.direct = fd, store.direct_io
            return True
        return False

    @property
    def size(self) -> int:
        """The file's size: what was received, and the trailing padding once finished."""
        return self.received + self._writer.padded

    @property
    def head(self) -> bytes:
        """The first `keep_head` bytes of the dataset (available once finished)."""
        return self._writer.head[self.header_size :]

    def space(self) -> memoryview:
        while self.error is None:
            try:
                return self._writer.space()
            except OSError as exc:
                if not (exc.errno in FULL and self._move_to_next_tier()):
                    self.error = exc
        self._writer.drop_staged()
        return self._writer.space()

    def advance(self, count: int) -> None:
        self._writer.advance(count)
        self.received += count

    def write(self, chunks: list) -> None:
        """Copy chunks already in memory into the staging buffers."""
        for chunk in chunks:
            data = memoryview(chunk).cast("B")
            while len(data):
                space = self.space()
                take = min(len(data), len(space))
                space[:take] = data[:take]
                self.advance(take)
                data = data[take:]

    def finish(self) -> None:
        """Write out what is still staged: after this the file on disk holds every byte written."""
        while self.error is None:
            try:
                self._writer.finish()
                break
            except OSError as exc:
                if not (exc.errno in FULL and self._move_to_next_tier()):
                    self.error = exc
        self._writer.close()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self._unlink_temp()

    def _unlink_temp(self) -> None:
        if not self.unnamed:  # (an unnamed file goes with its last descriptor)
            self.path.unlink(missing_ok=True)

    def commit(self, path: Path, replace: bool, sync_folder: bool = True, hold: bool = False) -> int:
        """fsync, close and move into place; return the file size. Discards itself on failure, except when the
        name is taken (AlreadyStored): then the caller decides, and may replace_leftover().

        `hold` keeps the file open and locked (flock) until release(): a store of the same instance that finds
        the name taken waits in lock_placed() until this one's row is committed or its file removed."""
        try:
            self.finish()
            if self.error is not None:
                raise self.error
            if self.unnamed:  # named first, then fsynced (FileStore.name)
                if hold:
                    fcntl.flock(self.fd, fcntl.LOCK_EX)  # before it has a name: nobody else can hold it yet
                self.name_durable = self.store.name(self.fd, path, replace, sync_folder)
                if not hold:
                    self.release()
            else:  # fsynced under its temporary name, then moved
                if self.store.fsync:
                    os.fsync(self.fd)
                if hold:
                    fcntl.flock(self.fd, fcntl.LOCK_EX)  # a new inode: nobody else can hold it yet
                else:
                    self.release()
                self.name_durable = self.store.commit(self.path, path, replace, sync_folder)
        except AlreadyStored:
            raise
        except BaseException:
            self.discard()
            raise
        return self.size

    def replace_leftover(self, path: Path, sync_folder: bool = True) -> int:
        """After AlreadyStored: move this file over the one under `path`, which has no index row."""
        try:
            if self.unnamed:
                self.name_durable = self.store.name(self.fd, path, True, sync_folder)
            else:
                self.name_durable = self.store.commit(self.path, path, True, sync_folder)
        except BaseException:
            self.discard()
            raise
        return self.size

    def release(self) -> None:
        """Close the file held since commit(hold=True), letting a store waiting in lock_placed() go on."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class TierSet:
    """The ordered storage tiers; new instances go to the first tier with room."""

    def __init__(self, tiers: tuple[Tier, ...], fsync: bool, direct_io: bool = True):
        self.tiers = tiers
        self.stores = [FileStore(t.path, fsync, direct_io) for t in tiers]

    @property
    def bounded(self) -> bool:
        """Does any tier have a capacity (so placement needs the usage figures)?"""
        return any(tier.capacity for tier in self.tiers)

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
