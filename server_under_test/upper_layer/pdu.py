"""The DICOM upper layer's PDUs on a plain socket (PS3.8 9.3): framing, reading, sending, the link's failures.

Why not pynetdicom's own transport: its reactors poll with 1 ms sleeps, one PDU per loop,
so a 2 MB instance in DCMTK's default 16 KB PDUs costs over 100 ms (measured: 25 stores/s
from 4 storescu clients). Here PDUs are read straight off the socket with recv_into into
one reused buffer, fragments stay memoryviews (no copies), and what is sent leaves as
buffers gathered many per sendmsg. pynetdicom still does what it is good at: A-ASSOCIATE
PDU encoding and decoding and presentation context negotiation (association.py). What the
P-DATA-TF PDUs carry (PDVs, DIMSE messages) is messages.py's.

The archive and the harness (its client associations and its Storage SCP) share this code.
It calls only socket methods that gevent's patched sockets implement cooperatively
(recv_into, recvmsg_into, sendmsg, sendfile, recv with MSG_PEEK on a non-blocking socket;
checked against gevent 26.9, whose sendfile sends from 8 KB reads: cooperative, but copying),
so under locust the same code yields to other greenlets, and in a plain process it blocks.
Every call is bounded by the socket timeout.
"""

from __future__ import annotations

import os
import socket
import struct
import time

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
PDU_NAMES = {
    1: "A-ASSOCIATE-RQ",
    2: "A-ASSOCIATE-AC",
    3: "A-ASSOCIATE-RJ",
    4: "P-DATA-TF",
    5: "A-RELEASE-RQ",
    6: "A-RELEASE-RP",
    7: "A-ABORT",
}

# The largest P-DATA-TF PDU we accept when we announce "unlimited" (0): a sanity bound, not
# a limit any real peer reaches. The receive buffer grows with the bytes that really arrive
# (see Wire._fill), never with what a length field declares.
UNLIMITED_PDU_CAP = 1 << 30
# The largest body of any other PDU (A-ASSOCIATE-RQ/AC/RJ, A-RELEASE-RQ/RP, A-ABORT). The
# biggest legitimate one is an A-ASSOCIATE-RQ: 128 presentation contexts, each proposing all
# ~40 transfer syntaxes pydicom knows, take about 130 KB, and a user identity item may add a
# 64 KB token; 256 KiB holds both and stays inside the 1 MiB receive buffer, so an
# association-phase PDU can never grow it. The release and abort PDUs are 4 bytes long.
ASSOCIATION_PDU_CAP = 256 << 10
# Receive buffer size: large enough for many 16 KB PDUs per system call, reused.
READ_BUFFER = 1 << 20
IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers one sendmsg may gather
# The smallest maximum PDU length we accept from a peer. PS3.8 sets no minimum, but a PDU
# must carry a PDV item header (6 bytes) and some data: a peer announcing 6 bytes would get
# endless empty fragments. Every implementation we know receives at least 4 KB (DCMTK's own
# minimum is 4096, pynetdicom's default 16382); 1024 leaves a wide margin for odd ones.
MIN_PEER_PDU = 1024
PDATA_HEADERS = 12  # PDU header (6) + the first PDV item header (6)


class LinkLost(Exception):
    """The association can carry no more messages (the subclasses say why)."""


class ConnectionClosed(LinkLost):
    """The peer closed the TCP connection (possibly in the middle of a PDU)."""


class PeerAborted(LinkLost):
    """The peer sent an A-ABORT."""


class ProtocolError(LinkLost):
    """The peer sent something the DICOM upper layer protocol does not allow here.

    `reason`: the A-ABORT reason to answer with (PS3.8 9.3.8, source 2 = service provider):
    0 not specified, 1 unrecognized PDU, 2 unexpected PDU, 6 invalid PDU parameter value."""

    def __init__(self, message: str, reason: int = 0):
        super().__init__(message)
        self.reason = reason


class RequestTimerExpired(LinkLost):
    """The peer did not complete its A-ASSOCIATE-RQ before the ARTIM timer ran out (PS3.8 9.1.5)."""


class Wire:
    """PDU framing over one TCP connection. All calls are bounded by the socket timeout."""

    def __init__(self, sock: socket.socket, timeout: float):
        self.sock = sock
        self.timeout = timeout
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms Nagle stalls per response
        # recvmsg_into reads a fragment and the next PDU's headers in one call; without it
        # (gevent on a platform lacking it) the headers come with the next recv_into.
        self._gathered_receive = hasattr(sock, "recvmsg_into")
        self._buffer = bytearray(0)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        # A monotonic time by which buffered reads must be done (the association request
        # timer, ARTIM): a peer dribbling one byte per socket timeout cannot hold us longer.
        self.deadline: float | None = None

    def _fill(self, needed: int, greedy: bool = True) -> None:
        """Make at least `needed` unread bytes available, reading as much as the socket has
        (or, not greedy, no more than needed: the bytes behind may go elsewhere).

        One reused buffer: reads land in it in large gulps (many 16 KB PDUs per system
        call), and when its end is reached the unread tail moves to the front. So views
        handed out by read_pdu stay valid only until the next read: callers copy or
        consume them first (MessageReader guarantees this).
        """
        if self._start == self._end:
            self._start = self._end = 0
        while self._end - self._start < needed:
            if self._start + needed > len(self._buffer):
                self._make_room(needed)
            room = self._view[self._end :] if greedy else self._view[self._end : self._start + needed]
            if self.deadline is not None:
                self._before_deadline()
            n = self.sock.recv_into(room)
            if n == 0:
                raise ConnectionClosed(f"connection closed with {needed - (self._end - self._start)} bytes missing")
            self._end += n

    def _make_room(self, needed: int) -> None:
        """Move the unread bytes to the front; grow the buffer only when it is full of them.

        Growth doubles (at least READ_BUFFER) up to `needed`: memory follows the bytes that
        arrived, so a length field declaring a gigabyte costs nothing until they come."""
        unread = self._end - self._start
        if self._start:
            self._buffer[:unread] = self._buffer[self._start : self._end]
            self._start, self._end = 0, unread
        if self._end == len(self._buffer):
            fresh = bytearray(max(READ_BUFFER, min(needed, 2 * len(self._buffer))))
            fresh[:unread] = self._buffer[:unread]
            self._buffer, self._view = fresh, memoryview(fresh)

    def _before_deadline(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RequestTimerExpired("the association request timer (ARTIM) expired")
        self.sock.settimeout(min(left, self.sock.gettimeout() or left))

    def read_into(self, view: memoryview, lookahead: int = 0) -> None:
        """Fill `view` with the next len(view) bytes: buffered ones first, the rest straight
        from the socket. The same system call may read up to `lookahead` bytes beyond them
        into the buffer (the next PDU's headers), never more."""
        have = min(self._end - self._start, len(view))
        if have:
            view[:have] = self._view[self._start : self._start + have]
            self._start += have
        while have < len(view):
            self._start = self._end = 0  # everything buffered was consumed above
            if self._gathered_receive:
                n, *_ = self.sock.recvmsg_into([view[have:], self._view[:lookahead]])
            else:
                n = self.sock.recv_into(view[have:])
            if n == 0:
                raise ConnectionClosed(f"connection closed with {len(view) - have} bytes of a fragment missing")
            taken = min(n, len(view) - have)
            have += taken
            self._end = n - taken

    def peek_pdata(self) -> tuple[int, int, int, int] | None:
        """If a P-DATA-TF comes next: (PDU length, first PDV length, context, control header),
        read without over-reading its data; None for any other PDU."""
        self._fill(6, greedy=False)
        if self._buffer[self._start] != P_DATA_TF:
            return None
        pdu_length = struct.unpack_from(">I", self._buffer, self._start + 2)[0]
        if pdu_length < 6:
            return None
        self._fill(PDATA_HEADERS, greedy=False)
        pdv_length = struct.unpack_from(">I", self._buffer, self._start + 6)[0]
        return pdu_length, pdv_length, self._buffer[self._start + 10], self._buffer[self._start + 11]

    def skip(self, length: int) -> None:
        """Consume `length` bytes already buffered (headers that peek_pdata returned)."""
        self._start += length

    def _take(self, length: int, greedy: bool = True) -> memoryview:
        self._fill(length, greedy)
        view = self._view[self._start : self._start + length]
        self._start += length
        return view

    def buffered(self) -> bool:
        return self._end > self._start

    def has_pdu(self) -> bool:
        """Is a whole PDU already in the buffer (so reading it needs no system call)?"""
        available = self._end - self._start
        if available < 6:
            return False
        return available >= 6 + struct.unpack_from(">I", self._buffer, self._start + 2)[0]

    def read_pdu(self, max_length: int, greedy: bool = True) -> tuple[int, memoryview]:
        """Return (PDU type, body). `max_length` bounds the body (0 = our sanity cap)."""
        header = self._take(6, greedy)
        pdu_type, length = header[0], struct.unpack(">I", header[2:6])[0]
        if pdu_type not in PDU_NAMES:
            raise ProtocolError(f"unknown PDU type 0x{pdu_type:02X}", reason=1)
        if pdu_type == P_DATA_TF:
            limit = max_length or UNLIMITED_PDU_CAP
            if length > limit:
                raise ProtocolError(f"P-DATA-TF of {length} bytes exceeds the maximum length {limit}", reason=6)
        elif length > ASSOCIATION_PDU_CAP:
            raise ProtocolError(
                f"{PDU_NAMES[pdu_type]} claims {length} bytes (at most {ASSOCIATION_PDU_CAP})", reason=6
            )
        return pdu_type, self._take(length, greedy)

    def send_all(self, parts: list) -> None:
        """Send every byte of every part (bytes, or memoryviews of bytes: pdata_parts' output),
        gathered: sendmsg takes up to IOV_MAX of them per system call."""
        pending = [p for p in parts if len(p)]
        first = 0
        while first < len(pending):
            sent = self.sock.sendmsg(pending[first : first + IOV_MAX])
            while first < len(pending) and sent >= len(pending[first]):
                sent -= len(pending[first])
                first += 1
            if sent:  # the kernel took part of one buffer: the rest goes next
                pending[first] = memoryview(pending[first])[sent:]

    def send_pdu(self, pdu_type: int, body: bytes) -> None:
        self.send_all([struct.pack(">BBI", pdu_type, 0, len(body)), body])

    def send_abort(self, source: int = 0, reason: int = 0) -> None:
        try:
            self.send_pdu(A_ABORT, bytes([0, 0, source, reason]))
        except OSError:
            pass

    def await_close(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the peer to close the connection (what it sends is dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(4096):
                    return
        except OSError:  # timed out or reset: either way the wait is over
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
