"""DIMSE messages over P-DATA-TF PDUs (PS3.8 9.3.5, Annex E): PDVs split and assembled, messages sent.

Reading: MessageReader assembles a message's command set from its PDVs, then hands the
dataset on as it arrives: large fragments straight from the socket into the store's
buffer, small ones as views of the receive buffer (pdu.Wire). Sending: a command or a
dataset becomes P-DATA-TF PDUs built around views of the caller's buffers (a pre-encoded
dataset's chunks), sent many per sendmsg, or with sendfile from a stored file.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from dataclasses import dataclass, field

from server_under_test.upper_layer.dimse import NO_DATASET, Command, decode_command, encode_command
from server_under_test.upper_layer.pdu import (
    A_ABORT,
    A_RELEASE_RQ,
    P_DATA_TF,
    PDATA_HEADERS,
    PDU_NAMES,
    UNLIMITED_PDU_CAP,
    ConnectionClosed,
    PeerAborted,
    ProtocolError,
    Wire,
)

# The PDU size we send when the peer announces "unlimited" (0): as if it had announced 4 MiB.
UNLIMITED_SEND_PDU = 4 << 20
# A dataset fragment at least this long is received straight into the store's buffer;
# shorter ones (senders with small PDUs) are read many per system call and copied.
DIRECT_FRAGMENT = 32 << 10
PDV_ITEM_HEADER = 6  # item length (4), presentation context ID (1), message control header (1)


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
            out.append(views[index][offset : offset + take])
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


def send_pdata(wire: Wire, context_id: int, is_command: bool, chunks: list, max_pdu: int) -> None:
    """Send a command or dataset as P-DATA-TF PDUs of at most `max_pdu` bytes each."""
    wire.send_all(pdata_parts(context_id, is_command, chunks, max_pdu))


def send_pdata_file(wire: Wire, context_id: int, fileobj, offset: int, length: int, max_pdu: int) -> None:
    """Send `length` bytes of a file as dataset fragments, letting the kernel copy them."""
    fragment = fragment_size(max_pdu)
    sent = 0
    while True:
        size = min(fragment, length - sent)
        last = sent + size >= length
        control = 0x02 if last else 0x00
        wire.send_all([struct.pack(">BBIIBB", P_DATA_TF, 0, size + 6, size + 2, context_id, control)])
        if size:
            done = wire.sock.sendfile(fileobj, offset + sent, size)
            if done != size:
                raise ConnectionClosed(f"sent {done} of {size} bytes of a file fragment")
        sent += size
        if last:
            return
