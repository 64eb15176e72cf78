"""The DICOM upper layer on a plain socket: PDUs, PDV fragments, DIMSE messages.

Why not pynetdicom's own transport: its reactors poll with 1 ms sleeps, one PDU per loop,
so a 2 MB instance in DCMTK's default 16 KB PDUs costs over 100 ms (measured: 25 stores/s
from 4 storescu clients). Here PDUs are read straight off the socket with recv_into into
one reused buffer, dataset fragments stay memoryviews (no copies), and messages leave as
P-DATA-TF PDUs built around views of the caller's buffers (a pre-encoded dataset's chunks),
many PDUs per sendmsg, or with sendfile. pynetdicom still does what it is good at:
A-ASSOCIATE PDU encoding and decoding and presentation context negotiation (association.py).

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
from collections import deque
from dataclasses import dataclass, field

from server_under_test.upper_layer.dimse import NO_DATASET, Command, decode_command, encode_command

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}

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
# The PDU size we send when the peer announces "unlimited" (0): as if it had announced 4 MiB.
UNLIMITED_SEND_PDU = 4 << 20
# Receive buffer size: large enough for many 16 KB PDUs per system call, reused.
READ_BUFFER = 1 << 20
IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers one sendmsg may gather
# The smallest maximum PDU length we accept from a peer. PS3.8 sets no minimum, but a PDU
# must carry a PDV item header (6 bytes) and some data: a peer announcing 6 bytes would get
# endless empty fragments. Every implementation we know receives at least 4 KB (DCMTK's own
# minimum is 4096, pynetdicom's default 16382); 1024 leaves a wide margin for odd ones.
MIN_PEER_PDU = 1024
# A dataset fragment at least this long is received straight into the store's buffer;
# shorter ones (senders with small PDUs) are read many per system call and copied.
DIRECT_FRAGMENT = 32 << 10
PDATA_HEADERS = 12  # PDU header (6) + the first PDV item header (6)
PDV_ITEM_HEADER = 6  # item length (4), presentation context ID (1), message control header (1)


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
            room = self._view[self._end:] if greedy else self._view[self._end:self._start + needed]
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
            self._buffer[:unread] = self._buffer[self._start:self._end]
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
            view[:have] = self._view[self._start:self._start + have]
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
        view = self._view[self._start:self._start + length]
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
            raise ProtocolError(f"{PDU_NAMES[pdu_type]} claims {length} bytes (at most {ASSOCIATION_PDU_CAP})",
                                reason=6)
        return pdu_type, self._take(length, greedy)

    def send_all(self, parts: list) -> None:
        """Send every byte of every part (bytes, or memoryviews of bytes: pdata_parts' output),
        gathered: sendmsg takes up to IOV_MAX of them per system call."""
        pending = [p for p in parts if len(p)]
        first = 0
        while first < len(pending):
            sent = self.sock.sendmsg(pending[first:first + IOV_MAX])
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

    def send_pdata(self, context_id: int, is_command: bool, chunks: list, max_pdu: int) -> None:
        """Send a command or dataset as P-DATA-TF PDUs of at most `max_pdu` bytes each."""
        self.send_all(pdata_parts(context_id, is_command, chunks, max_pdu))

    def send_pdata_file(self, context_id: int, fileobj, offset: int, length: int, max_pdu: int) -> None:
        """Send `length` bytes of a file as dataset fragments, letting the kernel copy them."""
        fragment = fragment_size(max_pdu)
        sent = 0
        while True:
            size = min(fragment, length - sent)
            last = sent + size >= length
            control = 0x02 if last else 0x00
            self.send_all([struct.pack(">BBIIBB", P_DATA_TF, 0, size + 6, size + 2, context_id, control)])
            if size:
                done = self.sock.sendfile(fileobj, offset + sent, size)
                if done != size:
                    raise ConnectionClosed(f"sent {done} of {size} bytes of a file fragment")
            sent += size
            if last:
                return

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


@dataclass
class Message:
    """One DIMSE message: a command set and, when the command says so, a dataset."""

    context_id: int
    command: Command
    data: list[memoryview] = field(default_factory=list)

    @property
    def command_field(self) -> int:
        return int(self.command.CommandField)

    @property
    def has_dataset(self) -> bool:
        return int(self.command.get("CommandDataSetType", NO_DATASET)) != NO_DATASET

    @property
    def data_size(self) -> int:
        return sum(len(c) for c in self.data)

    @property
    def dataset(self) -> bytes:
        """The dataset read by MessageReader.read, as one bytes object."""
        return b"".join(self.data)


class ReleaseRequested(Exception):
    """The peer asked to release the association (A-RELEASE-RQ)."""


class MessageReader:
    """Assembles DIMSE messages from the PDVs of incoming P-DATA-TF PDUs."""

    def __init__(self, wire: Wire, max_pdu: int):
        self.wire = wire
        self.max_pdu = max_pdu
        self._pdvs: deque = deque()
        self._in_dataset = False

    def _next_pdv(self, greedy: bool = True) -> tuple[int, int, memoryview]:
        while not self._pdvs:
            pdu_type, body = self.wire.read_pdu(self.max_pdu, greedy)
            if pdu_type == P_DATA_TF:
                self._pdvs.extend(split_pdvs(body))
            elif pdu_type == A_RELEASE_RQ:
                raise ReleaseRequested()
            elif pdu_type == A_ABORT:
                source, reason = (body[2], body[3]) if len(body) > 3 else ("?", "?")
                raise PeerAborted(f"the peer aborted the association (source {source}, reason {reason})")
            else:
                raise ProtocolError(f"unexpected {PDU_NAMES[pdu_type]} during an established association")
        return self._pdvs.popleft()

    def _check_dataset_fragment(self, message: Message, ctx: int, control: int) -> None:
        if control & 0x01:
            raise ProtocolError("command fragment received inside a dataset")
        if ctx != message.context_id:
            raise ProtocolError(f"dataset fragment on context {ctx}, command on {message.context_id}")
        if control & 0x02:
            self._in_dataset = False

    def stream_dataset(self, message: Message, sink) -> None:
        """Deliver the message's dataset into `sink` (space() -> a writable memoryview, advance(n),
        write(chunks) for bytes already buffered).

        A large fragment goes from the socket straight into the sink's buffer, so its bytes
        are copied once, by the kernel; small ones are read many per system call and copied.
        """
        wire = self.wire
        limit = self.max_pdu or UNLIMITED_PDU_CAP
        while self._in_dataset:
            if not self._pdvs:
                pdata = wire.peek_pdata()
                if pdata:
                    pdu_length, pdv_length, ctx, control = pdata
                    alone = pdu_length == pdv_length + 4  # one PDV fills the PDU (DCMTK, pynetdicom)
                    if alone and DIRECT_FRAGMENT <= pdv_length - 2 and pdu_length <= limit:
                        self._check_dataset_fragment(message, ctx, control)
                        wire.skip(PDATA_HEADERS)
                        self._receive_into(sink, pdv_length - 2)
                        continue
            ctx, control, data = self._next_pdv()
            self._check_dataset_fragment(message, ctx, control)
            sink.write([data])

    def _receive_into(self, sink, length: int) -> None:
        while length:
            space = sink.space()
            take = min(len(space), length)
            self.wire.read_into(space[:take], lookahead=PDATA_HEADERS)
            sink.advance(take)
            length -= take

    def skip_dataset(self, message: Message) -> None:
        """Read the dataset off the wire and drop it (the request was refused)."""
        for _ in self.fragments(message):
            pass

    def pending(self) -> bool:
        """True when a PDV or bytes from the peer wait to be read (used to notice C-CANCEL)."""
        if self._pdvs or self.wire.buffered():
            return True
        sock = self.wire.sock
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            return len(sock.recv(1, socket.MSG_PEEK)) > 0
        except (BlockingIOError, InterruptedError):
            return False
        finally:
            sock.settimeout(timeout)

    def read_command(self, greedy: bool = False) -> Message:
        """The next message's command set (the dataset, if any, follows via fragments() or
        stream_dataset()). Not greedy by default: the dataset behind the command is better
        received straight into its file by stream_dataset; greedy reads what else has come
        in the same system call (one call fewer for a response, a query, a small dataset)."""
        if self._in_dataset:
            raise RuntimeError("the previous message's dataset was not consumed")
        command_bytes = bytearray()
        while True:
            ctx, control, data = self._next_pdv(greedy)
            if not control & 0x01:
                raise ProtocolError("dataset fragment received before the command set was complete")
            command_bytes += data
            if control & 0x02:
                break
        try:
            command = decode_command(bytes(command_bytes))
        except ValueError as exc:
            raise ProtocolError(f"cannot decode the command set: {exc}") from None
        message = Message(ctx, command)
        self._in_dataset = message.has_dataset
        return message

    def fragments(self, message: Message):
        """Yield the dataset as batches (lists) of fragments.

        A batch holds every fragment already in the receive buffer, so it can go to disk in
        one writev; its views are valid only until the next batch is asked for.
        """
        while self._in_dataset:
            batch = []
            while self._in_dataset:
                ctx, control, data = self._next_pdv()
                self._check_dataset_fragment(message, ctx, control)
                batch.append(data)
                if not self._pdvs and not self.wire.has_pdu():
                    break  # the next fragment needs a recv, which may reuse the buffer
            yield batch

    def read(self) -> Message:
        """A whole message with its dataset copied into memory (small datasets: identifiers, responses)."""
        message = self.read_command(greedy=True)
        message.data = [bytes(fragment) for batch in self.fragments(message) for fragment in batch]
        return message


def split_pdvs(view: memoryview) -> list[tuple[int, int, memoryview]]:
    """Split a P-DATA-TF body into (context id, control header, data) without copying."""
    out, offset = [], 0
    while offset < len(view):
        if offset + 6 > len(view):
            raise ProtocolError("truncated PDV item header", reason=6)
        length = struct.unpack_from(">I", view, offset)[0]
        if length < 2 or offset + 4 + length > len(view):
            raise ProtocolError(f"PDV item length {length} does not fit the PDU", reason=6)
        out.append((view[offset + 4], view[offset + 5], view[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return out


def fragment_size(max_pdu: int) -> int:
    """Dataset or command bytes per P-DATA-TF PDU for a peer that receives `max_pdu` bytes.

    One PDV per PDU, and the PDU's body (its PDV item header included) never longer than the
    peer announced (PS3.8 D.1: the maximum length covers the whole variable field). A peer
    announcing no limit (0) gets the PDUs it would get for a 4 MiB limit: one rule for every
    peer, and one for both sides of the benchmark (the harness's own copy once made fragments
    6 bytes longer than the archive's).

    A limit too small to carry a byte of data raises ValueError (association set-up refuses
    such peers: MIN_PEER_PDU), where it once gave 0-byte fragments and an endless loop.
    """
    fragment = (max_pdu or UNLIMITED_SEND_PDU) - PDV_ITEM_HEADER
    if fragment <= 0:
        raise ValueError(f"a maximum PDU length of {max_pdu} bytes cannot carry a PDV")
    return fragment


def pdata_parts(context_id: int, is_command: bool, chunks: list, max_pdu: int) -> list:
    """The P-DATA-TF PDUs that carry a command or a dataset, as buffers for one gathered
    send: headers plus views of `chunks`, nothing copied (see fragment_size for their size)."""
    fragment = fragment_size(max_pdu)
    views = [memoryview(c).cast("B") for c in chunks if len(c)]
    total = sum(len(v) for v in views)
    kind = 0x01 if is_command else 0x00
    full = struct.pack(">BBIIBB", P_DATA_TF, 0, fragment + 6, fragment + 2, context_id, kind)  # every PDU but the last
    out, sent, index, offset = [], 0, 0, 0
    while True:
        size = min(fragment, total - sent)
        sent += size
        last = sent >= total
        out.append(struct.pack(">BBIIBB", P_DATA_TF, 0, size + 6, size + 2, context_id, kind | 0x02) if last else full)
        while size:  # the fragment's bytes: slices of one chunk or of several
            take = min(size, len(views[index]) - offset)
            out.append(views[index][offset:offset + take])
            size -= take
            offset += take
            if offset == len(views[index]):
                index, offset = index + 1, 0
        if sent >= total:
            return out


def command_parts(context_id: int, command: dict, has_dataset: bool, max_pdu: int) -> list:
    """A command set as buffers to send (reusable: many C-FIND responses share one)."""
    command.CommandDataSetType = 0x0000 if has_dataset else NO_DATASET
    return pdata_parts(context_id, True, [encode_command(command)], max_pdu)


def message_parts(context_id: int, command: dict, data: list | None, max_pdu: int) -> list:
    """A whole DIMSE message (command, then the dataset if any) as buffers for one gathered send."""
    parts = command_parts(context_id, command, data is not None, max_pdu)
    if data is not None:
        parts += pdata_parts(context_id, False, data, max_pdu)
    return parts
