"""The parts of a STOW-RS request body (multipart/related, RFC 2046 5.1), split in the thread that stores them.

A part's bytes are received from the wire straight into the store's staging buffer (the sink's space(), as
a C-STORE dataset is), and the delimiter is searched for there: a byte of a part is copied once, by the
kernel. Only what is read past a part's end (at most WIRE_READ) and the few bytes that could begin a
delimiter are copied. Measured against reading through aiohttp's stream (a copy by its parser, another into
the staging buffer, every 256 KB a hop from the event loop to the storing thread): with parts.py, STOW-RS of
2 MB instances went from 6.6 to 3.1-4.6 ms of archive CPU per instance (C-STORE: 3.0-3.75 in the same runs).

A wire is anything with recv_into(view) -> count (0 at the body's end) that raises TimeoutError when the
client is silent too long: the socket itself (body.py) or aiohttp's stream for chunked bodies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Protocol

MAX_HEADERS = 16 << 10  # a part's header block; ours are a line or two
MAX_PREAMBLE = 64 << 10  # bytes before the first boundary (RFC 2046 allows a preamble, nobody sends one)
READ = 64 << 10  # bytes per read into memory: boundaries, headers, a part's head
WIRE_READ = 1 << 20  # at most this per receive into the sink: bounds what is read past a part's end
MIN_DIRECT = 4 << 10  # less room than this at a staging buffer's end: read through memory instead
LOOKAHEAD = 512  # bytes received past a part's expected end: the next part's boundary and headers


class MultipartError(ValueError):
    """The body is not a well-formed multipart body: a 400."""


class Wire(Protocol):
    def recv_into(self, view: memoryview) -> int: ...


def _libc_memmem():
    """glibc's memmem: a substring search over a writable buffer without copying it (bytes.find needs bytes)."""
    try:
        memmem = ctypes.CDLL(ctypes.util.find_library("c") or None).memmem
    except (OSError, AttributeError):
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    return memmem


_MEMMEM = _libc_memmem()


def find(view: memoryview, needle: bytes) -> int:
    """Where `needle` first starts in the writable buffer `view`, or -1."""
    if _MEMMEM is None or view.readonly:
        return bytes(view).find(needle)
    array = (ctypes.c_char * len(view)).from_buffer(view)
    start = ctypes.addressof(array)
    found = _MEMMEM(start, len(view), needle, len(needle))
    del array  # the export must end here: the store reuses and closes its staging buffers
    return -1 if found is None else found - start


class Splitter:
    """Reads the parts in order: next_part() gives a part's headers (None after the last); then read() its
    bytes a piece at a time (b"" at its end), stream_into(sink) the rest of it, or drain(). A body that ends
    before the closing delimiter raises MultipartError."""

    def __init__(
        self, wire: Wire, boundary: str, already_read: bytes = b"", read: int = READ, min_direct: int = MIN_DIRECT
    ):
        if not boundary or len(boundary) > 70:
            raise MultipartError("the boundary must be 1 to 70 characters (RFC 2046)")
        self.wire = wire
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        # "\r\n" first, so a boundary at the very start is found as a delimiter too
        self.carry, self.at = b"\r\n" + already_read, 0  # received, not yet consumed: carry[at:]
        self.base = -2  # where carry[0] lies in the body
        self.part_start = 0  # where the current part began in the body
        self.typical = 0  # the length of the last part: parts of one study are alike
        self.in_part = False
        self.finished = False
        self.read_size, self.min_direct = read, min_direct  # (small in tests: a part spans many reads)

    @property
    def keep(self) -> int:
        """Bytes at the end of what was received that may be the beginning of a delimiter."""
        return len(self.delimiter) - 1

    def _more(self, what: str) -> None:
        piece = bytearray(self.read_size)
        count = self.wire.recv_into(memoryview(piece))
        if not count:
            raise MultipartError(f"the body ends {what}")
        del piece[count:]
        self._carry(self.carry[self.at :] + piece, self.base + self.at)

    def _carry(self, data: bytes, where: int) -> None:
        """Keep `data` (what lies at `where` in the body on) as the bytes received and not yet consumed."""
        self.carry, self.at, self.base = data, 0, where

    def _part_ends(self, where: int) -> None:
        self.in_part = False  # the delimiter (at `where` in the body) stays for next_part
        self.typical = where - self.part_start

    def next_part(self) -> dict[str, str] | None:
        """The next part's headers (names in lower case); None after the closing delimiter."""
        while self.in_part:  # the caller left bytes of the previous part unread
            self.drain()
        if self.finished:
            return None
        skipped = 0
        while (found := self.carry.find(self.delimiter, self.at)) < 0:  # the first boundary, after any preamble
            skipped += max(0, len(self.carry) - self.at - self.keep)
            if skipped > MAX_PREAMBLE:
                raise MultipartError("no boundary where the body should start")
            self.at = max(self.at, len(self.carry) - self.keep)
            self._more("before its first boundary")
        self.at = found + len(self.delimiter)
        while len(self.carry) - self.at < 2:
            self._more("inside a boundary")
        if self.carry.startswith(b"--", self.at):
            self.finished = True
            return None
        while (end := self.carry.find(b"\r\n\r\n", self.at)) < 0:  # the boundary line's end, headers, a blank line
            if len(self.carry) - self.at > MAX_HEADERS:
                raise MultipartError(f"a part's headers exceed {MAX_HEADERS} bytes")
            self._more("inside a part's headers")
        return self._headers(end)

    def _headers(self, end: int) -> dict[str, str]:
        """Parse the boundary line's rest and the header lines; leave `at` on the part's first byte."""
        line_end = self.carry.find(b"\r\n", self.at)
        if self.carry[self.at : line_end].strip(b" \t"):  # only transport padding may follow a boundary
            raise MultipartError("text after a boundary")
        headers = {}
        if line_end < end:  # header lines between the boundary line and the blank line
            for line in self.carry[line_end + 2 : end].split(b"\r\n"):
                name, colon, value = line.partition(b":")
                if not colon or not name.strip():
                    raise MultipartError("a part header without a name")
                headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        self.at = end + 4
        self.part_start = self.base + self.at
        self.in_part = True
        return headers

    def read(self) -> memoryview | bytes:
        """The part's next bytes (at most READ of them, through memory); b"" once it has ended."""
        while self.in_part:
            found = self.carry.find(self.delimiter, self.at, self.at + self.read_size + len(self.delimiter))
            if found >= 0:
                self._part_ends(self.base + found)
                end = found
            else:
                end = min(self.at + self.read_size, len(self.carry) - self.keep)
            if end > self.at or not self.in_part:
                piece = memoryview(self.carry)[self.at : end]
                self.at = end
                return piece
            self._more("inside a part")
        return b""

    def drain(self) -> None:
        while self.read():
            pass

    def stream_into(self, sink) -> None:
        """The rest of the part into `sink` (space() -> a writable memoryview, advance(n), write(chunks)):
        received straight into its space, searched there for the delimiter."""
        while (piece := self._received_part()) is not None:  # what is in memory already goes first
            sink.write([piece])
        while self.in_part:
            tail = memoryview(self.carry)[self.at :]  # fewer than `keep` bytes: perhaps a delimiter's start
            space = sink.space()
            if len(space) - len(tail) < self.min_direct:  # the end of a staging buffer: through memory
                self._more("inside a part")
                while (piece := self._received_part()) is not None:
                    sink.write([piece])
                continue
            space[: len(tail)] = tail
            where = self.base + self.at  # of space[0] in the body
            count = self.wire.recv_into(space[len(tail) : len(tail) + self._wanted(where + len(tail))])
            if not count:
                raise MultipartError("the body ends inside a part")
            received = space[: len(tail) + count]
            found = find(received, self.delimiter)
            if found >= 0:
                sink.advance(found)
                self._carry(bytes(received[found:]), where + found)  # the next part's beginning: copied
                self._part_ends(where + found)
                return
            sure = max(0, len(received) - self.keep)
            sink.advance(sure)
            self._carry(bytes(received[sure:]), where + sure)

    def _wanted(self, where: int) -> int:
        """How much to receive into the sink at `where`: what the part likely lacks (it is as long as the last
        one), and a little more for the next part's headers. Bytes received past a part's end are copied out
        of the sink, twice: with 0.5 MB CT parts and 1 MB receives, most of them were (measured)."""
        if not self.typical:
            return WIRE_READ
        lacking = self.part_start + self.typical + len(self.delimiter) + LOOKAHEAD - where
        return min(WIRE_READ, max(READ, lacking))

    def _received_part(self) -> memoryview | None:
        """Part bytes already received (all but a possible delimiter's start); None when there are none."""
        if not self.in_part:
            return None
        found = self.carry.find(self.delimiter, self.at)
        if found >= 0:
            self._part_ends(self.base + found)
            end = found
        else:
            end = max(self.at, len(self.carry) - self.keep)
        if end == self.at:
            return None
        piece = memoryview(self.carry)[self.at : end]
        self.at = end
        return piece
