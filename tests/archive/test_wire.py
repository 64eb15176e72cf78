"""MessageReader.stream_dataset over a real TCP connection, with PDUs built byte by byte.

Large fragments are received straight into the sink's buffer, small ones copied; both
must give the same bytes, and every protocol violation must surface as an exception.
"""

import random
import socket
import struct
import threading

import pytest

from server_under_test.storage.files import FileStore
from server_under_test.upper_layer.dimse import Command, encode_command
from server_under_test.upper_layer.messages import MessageReader
from server_under_test.upper_layer.pdu import A_ABORT, P_DATA_TF, ConnectionClosed, PeerAborted, ProtocolError, Wire

CONTEXT = 1


def _pdu(*pdvs: tuple[int, int, bytes]) -> bytes:
    items = b"".join(struct.pack(">IBB", len(data) + 2, ctx, control) + data for ctx, control, data in pdvs)
    return struct.pack(">BBI", P_DATA_TF, 0, len(items)) + items


def _store_command() -> bytes:
    command = Command()
    command.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1"
    command.CommandField = 0x0001
    command.MessageID = 1
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = "1.2.3.4"
    return _pdu((CONTEXT, 0x03, encode_command(command)))


def _dataset_pdus(data: bytes, fragment: int) -> list[bytes]:
    pieces = [data[i : i + fragment] for i in range(0, len(data), fragment)]
    return [_pdu((CONTEXT, 0x02 if n == len(pieces) - 1 else 0x00, p)) for n, p in enumerate(pieces)]


def _read(tmp_path, stream: bytes, close_after: bool = True, chunk: int = 7919):
    """Send `stream` (in odd-sized writes) and read one C-STORE through stream_dataset into a file."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()

    def send():
        for i in range(0, len(stream), chunk):
            theirs.sendall(stream[i : i + chunk])
        if close_after:
            theirs.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    reader = MessageReader(Wire(ours, 10), 1 << 20)
    incoming = FileStore(tmp_path).incoming(b"", keep_head=16)
    try:
        message = reader.read_command()
        reader.stream_dataset(message, incoming)
        incoming.finish()
        return incoming.path.read_bytes(), incoming.head
    finally:
        sender.join()
        incoming.discard()
        ours.close()
        theirs.close()


DATA = random.Random(5).randbytes(3 * 1024 * 1024 + 321)


@pytest.mark.parametrize("fragment", [131060, (1 << 20) - 6, 16372, 33000, 1000], ids=lambda f: f"{f}B")
def test_a_dataset_arrives_whole_whatever_the_fragment_size(tmp_path, fragment):
    stream = _store_command() + b"".join(_dataset_pdus(DATA, fragment))
    data, head = _read(tmp_path, stream)
    assert data == DATA and head == DATA[:16]


def test_several_pdvs_in_one_pdu_and_the_next_command_behind_the_dataset(tmp_path):
    big, last = DATA[:200_000], DATA[200_000:200_100]
    stream = _store_command() + _pdu((CONTEXT, 0x00, big), (CONTEXT, 0x02, last)) + _store_command()
    data, _ = _read(tmp_path, stream)
    assert data == big + last


def test_an_abort_in_the_middle_of_a_dataset_is_reported(tmp_path):
    pdus = _dataset_pdus(DATA, 131060)
    stream = _store_command() + b"".join(pdus[:3]) + struct.pack(">BBI", A_ABORT, 0, 4) + b"\x00\x00\x00\x00"
    with pytest.raises(PeerAborted):
        _read(tmp_path, stream, close_after=False)


def test_a_fragment_on_another_context_is_a_protocol_error(tmp_path):
    stream = _store_command() + _pdu((3, 0x00, DATA[:100_000]))
    with pytest.raises(ProtocolError, match="context 3"):
        _read(tmp_path, stream)


def test_a_command_fragment_inside_a_dataset_is_a_protocol_error(tmp_path):
    stream = _store_command() + _pdu((CONTEXT, 0x01, DATA[:100_000]))
    with pytest.raises(ProtocolError, match="command fragment"):
        _read(tmp_path, stream)


def test_a_connection_lost_inside_a_large_fragment_is_reported(tmp_path):
    whole = _store_command() + _pdu((CONTEXT, 0x02, DATA[:500_000]))
    with pytest.raises(ConnectionClosed):
        _read(tmp_path, whole[:300_000])


def test_a_pdu_over_the_announced_maximum_is_a_protocol_error(tmp_path):
    stream = _store_command() + _pdu((CONTEXT, 0x02, DATA[: (1 << 20) - 5]))
    with pytest.raises(ProtocolError, match="exceeds the maximum length"):
        _read(tmp_path, stream)
