"""The parts of a multipart/related request body (RFC 2046 5.1), read from aiohttp's request stream.

Our own rather than aiohttp's MultipartReader, by measurement: its reader copies each byte three or four
times while it looks for the boundary (a third of the archive's CPU in a STOW-RS of 2 MB instances, which
then ran at 0.58-0.67 of C-STORE). Here a part's bytes are not copied: the boundary is searched by
bytes.find in each piece aiohttp read (and across two pieces in the few bytes where they join), and the
part's bytes go out as views of those pieces.
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader

MAX_HEADERS = 16 << 10  # a part's header block; ours are a line or two
MAX_PREAMBLE = 64 << 10  # bytes before the first boundary (RFC 2046 allows a preamble, nobody sends one)


class MultipartError(ValueError):
    """The body is not a well-formed multipart body: a 400."""


class MultipartReader:
    """Reads parts in order: next_part() gives a part's headers (None after the last), then read_block()
    its bytes until it returns [] at the part's end. A body that ends before the closing boundary raises."""

    def __init__(self, content: StreamReader, boundary: str, timeout: float, block: int = 1 << 20):
        if not boundary or len(boundary) > 70:
            raise MultipartError("the boundary must be 1 to 70 characters (RFC 2046)")
        self.content = content
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        self.timeout = timeout
        self.block = block
        self.buffer = b"\r\n"  # so the first boundary, at the very start, is found as a delimiter too
        self.in_part = False
        self.finished = False

    async def _read(self) -> bytes:
        async with asyncio.timeout(self.timeout):  # a client silent for `timeout`: TimeoutError (408)
            return await self.content.readany()

    async def _more(self, what: str) -> None:
        piece = await self._read()
        if not piece:
            raise MultipartError(f"the body ends {what}")
        self.buffer = self.buffer + piece if self.buffer else piece

    async def next_part(self) -> dict[str, str] | None:
        """The next part's headers (names in lower case); None after the closing boundary."""
        while self.in_part:  # the caller left bytes of the previous part unread
            await self.read_block()
        if self.finished:
            return None
        keep = len(self.delimiter) - 1
        skipped = 0
        while (at := self.buffer.find(self.delimiter)) < 0:  # the first boundary, after any preamble
            skipped += max(0, len(self.buffer) - keep)
            if skipped > MAX_PREAMBLE:
                raise MultipartError("no boundary where the body should start")
            self.buffer = self.buffer[-keep:]
            await self._more("before its first boundary")
        self.buffer = self.buffer[at + len(self.delimiter) :]
        while len(self.buffer) < 2:
            await self._more("inside a boundary")
        if self.buffer.startswith(b"--"):
            self.finished = True
            return None
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:  # the boundary line's end, header lines, a blank line
            if len(self.buffer) > MAX_HEADERS:
                raise MultipartError(f"a part's headers exceed {MAX_HEADERS} bytes")
            await self._more("inside a part's headers")
        return self._headers(end)

    def _headers(self, end: int) -> dict[str, str]:
        """Parse the boundary line's rest and the header lines; leave the buffer at the part's first byte."""
        line_end = self.buffer.find(b"\r\n")
        if self.buffer[:line_end].strip(b" \t"):  # only transport padding may follow a boundary
            raise MultipartError("text after a boundary")
        if line_end == end:  # no header lines: the blank line follows the boundary line
            self.buffer = self.buffer[end + 4 :]
            self.in_part = True
            return {}
        headers = {}
        for line in self.buffer[line_end + 2 : end].split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise MultipartError("a part header without a name")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
        self.buffer = self.buffer[end + 4 :]
        self.in_part = True
        return headers

    async def read_block(self) -> list:
        """The part's next bytes, about `block` of them, as a list of buffers; [] once the part has ended."""
        if not self.in_part:
            return []
        out, size, keep = [], 0, len(self.delimiter) - 1
        while True:
            block = self.buffer
            at = block.find(self.delimiter)
            if at >= 0:
                if at:
                    out.append(memoryview(block)[:at])
                self.buffer = block[at:]  # the delimiter stays for next_part
                self.in_part = False
                return out
            if len(block) > keep:  # all but what could be the start of a delimiter
                out.append(memoryview(block)[: len(block) - keep])
                size += len(block) - keep
                self.buffer = block[len(block) - keep :]
            if size >= self.block:
                return out
            piece = await self._read()
            if not piece:
                raise MultipartError("the body ends inside a part")
            # A delimiter that starts in the carried tail ends within the piece's first bytes: look there in
            # a few bytes; without one, the tail is part data and the piece is searched alone, never copied.
            tail = self.buffer
            if len(piece) <= keep or (tail + piece[:keep]).find(self.delimiter) >= 0:
                self.buffer = tail + piece
                continue
            if tail:
                out.append(tail)
                size += len(tail)
            self.buffer = piece
