"""Where a STOW-RS request body's bytes come from: the connection's socket itself, or aiohttp's stream.

A body of a declared length (no transfer or content coding) is taken over from aiohttp: what its parser had
already read is handed on, the transport stops reading, and the storing threads receive the rest from the
socket straight into their staging buffers (multipart.py). aiohttp's parser then still expects those bytes,
so the connection is closed after the answer (`Connection: close`): a client opens a new one for its next
request, which on a body of megabytes costs nothing that shows. Any other body (chunked, or one aiohttp had
read whole with its headers) is read through aiohttp's stream, a piece at a time, from the event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket

from aiohttp import web


class TooLarge(Exception):
    """The body is longer than max_request (a chunked body: a declared length is checked before reading)."""


class SocketWire:
    """The rest of a body of known length, received from the connection's socket in the storing threads.

    A duplicate of the socket, so closing it leaves the connection to aiohttp; each receive waits at most
    `timeout` (TimeoutError: a 408)."""

    def __init__(self, transport: asyncio.Transport, fileno: int, remaining: int, timeout: float):
        self.transport = transport
        self.sock = socket.socket(fileno=os.dup(fileno))
        self.sock.settimeout(timeout)
        self.remaining = remaining

    def recv_into(self, view: memoryview) -> int:
        if not self.remaining:
            return 0
        if self.transport.is_reading():
            # aiohttp resumed its reading (a change in its flow control?): bytes of the body may have gone to
            # it, and a part would be stored with a hole. Fail the request instead.
            raise ConnectionError("the connection is being read by the HTTP server again")
        count = self.sock.recv_into(view[: self.remaining])
        if not count:  # the client went away before its declared length
            self.remaining = 0
        self.remaining -= count
        return count

    def abort(self) -> None:
        """Wake a thread waiting in recv_into (it then sees the body end): the request was cancelled."""
        try:
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class StreamWire:
    """A body read through aiohttp's stream (chunked transfer coding): the event loop reads, a storing thread
    asks for each piece and copies it; at most `limit` bytes in all."""

    def __init__(self, content, loop: asyncio.AbstractEventLoop, timeout: float, limit: int):
        self.content, self.loop, self.timeout, self.limit = content, loop, timeout, limit
        self.piece = memoryview(b"")
        self.read = 0

    async def _next(self) -> bytes:
        async with asyncio.timeout(self.timeout):  # a client silent for `timeout`: TimeoutError (408)
            return await self.content.readany()

    def recv_into(self, view: memoryview) -> int:
        if not self.piece:
            # (The wait is bounded here too: a loop that stopped would never run the read.)
            reading = asyncio.run_coroutine_threadsafe(self._next(), self.loop)
            self.piece = memoryview(reading.result(self.timeout + 5))
            self.read += len(self.piece)
            if self.read > self.limit:
                raise TooLarge()
        count = min(len(view), len(self.piece))
        view[:count] = self.piece[:count]
        self.piece = self.piece[count:]
        return count

    def abort(self) -> None:
        self.content.set_exception(ConnectionAbortedError("the request was cancelled"))

    def close(self) -> None:
        pass


def take_over(request: web.Request, timeout: float) -> tuple[SocketWire, bytes] | None:
    """The socket wire of a plain body of declared length and the bytes aiohttp had read of it; None for
    any other body (read through the stream). The answer must then close the connection."""
    headers = request.headers
    transport = request.transport
    if request.content_length is None or "Transfer-Encoding" in headers or "Content-Encoding" in headers:
        return None
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    content = request.content
    if content.is_eof():  # aiohttp has the whole body already: read it there, and keep the connection
        return None
    pieces = []
    # Taking what aiohttp buffered may let its parser go on with bytes it held back (its flow control):
    # take until nothing is left. Marking the stream's end (so that aiohttp does not wait for the rest of
    # the body after the handler) resumes reading: the transport stops only after it, before the loop can
    # read again.
    while piece := content.read_nowait():
        pieces.append(piece)
    content.feed_eof()
    transport.pause_reading()
    remaining = request.content_length - content.total_bytes
    return SocketWire(transport, sock.fileno(), remaining, timeout), b"".join(pieces)


def open_body(request: web.Request, timeout: float, limit: int) -> tuple[SocketWire | StreamWire, bytes, bool]:
    """Where the body comes from, what of it was read already, and whether the answer must close the
    connection (the socket was read past aiohttp)."""
    taken = take_over(request, timeout)
    if taken is not None:
        return taken[0], taken[1], True
    return StreamWire(request.content, asyncio.get_running_loop(), timeout, limit), b"", False
