"""Property-based tests of the readers that take bytes from peers: whatever arrives, they
yield messages or raise their module's protocol errors, never anything else, never hang."""

from __future__ import annotations

import socket
import struct
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_under_test.services.keys import Incomplete, Malformed, read_keys
from server_under_test.upper_layer.messages import MessageReader, ReleaseRequested
from server_under_test.upper_layer.pdu import LinkLost, Wire

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# PDUs that look like PDUs (a known or unknown type, a length that may or may not match the
# body), so the examples reach past the first header check; PDV items likewise.
pdv_items = st.builds(
    lambda ctx, control, data, slack: struct.pack(">IBB", len(data) + 2 + slack, ctx, control) + data,
    st.sampled_from([1, 3]),
    st.integers(0, 3),
    st.binary(max_size=64),
    st.sampled_from([0, 0, 0, 1, -1]),
)
pdus = st.one_of(
    st.builds(
        lambda items: struct.pack(">BBI", 4, 0, len(b"".join(items))) + b"".join(items), st.lists(pdv_items, max_size=4)
    ),
    st.builds(
        lambda kind, body, slack: struct.pack(">BBI", kind, 0, max(0, len(body) + slack)) + body,
        st.integers(0, 9),
        st.binary(max_size=80),
        st.sampled_from([0, 0, 1, -1, 1 << 20]),
    ),
)
streams = st.one_of(st.binary(max_size=300), st.lists(pdus, max_size=6).map(b"".join))


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection (Wire sets TCP options a Unix socket pair lacks)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, theirs


def messages_read_from(stream: bytes) -> int:
    """Feed `stream` to a MessageReader over a real TCP connection and read until it stops."""
    ours, theirs = tcp_pair()
    writer = threading.Thread(target=lambda: (theirs.sendall(stream), theirs.shutdown(socket.SHUT_WR)))
    writer.start()
    reader = MessageReader(Wire(ours, timeout=2.0), max_pdu=16384)
    count = 0
    try:
        while True:
            reader.read()
            count += 1
    except (LinkLost, ReleaseRequested):
        return count
    finally:
        writer.join()
        ours.close()
        theirs.close()


@FEW
@given(streams)
def test_the_message_reader_yields_messages_or_raises_a_protocol_error(stream):
    messages_read_from(stream)  # anything but LinkLost or ReleaseRequested (or a hang: socket timeouts) fails


def test_the_message_reader_reads_a_well_formed_message():
    from server_under_test.upper_layer.dimse import echo_request, encode_command
    from server_under_test.upper_layer.messages import pdata_parts

    stream = b"".join(bytes(p) for p in pdata_parts(1, True, [encode_command(echo_request(7))], 16384))
    assert messages_read_from(stream) == 1  # the property test above is not vacuous


def nested(depth: int, explicit: bool) -> bytes:
    """`depth` undefined-length sequences, one inside the other's single item."""
    if explicit:
        sq = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    else:
        sq = struct.pack("<HHI", 0x0008, 0x1140, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (sq + item) * depth + ends * depth


datasets = st.one_of(
    st.binary(max_size=400),
    st.builds(
        lambda depth, explicit, tail: nested(depth, explicit) + tail,
        st.integers(0, 3000),
        st.booleans(),
        st.binary(max_size=40),
    ),
)


@FEW
@given(datasets, st.booleans(), st.booleans())
def test_the_header_scanner_returns_or_raises_malformed_or_incomplete(data, implicit, little):
    try:
        read_keys(data, implicit, little)
    except (Malformed, Incomplete):
        pass


def test_deep_nesting_is_malformed_not_a_recursion_error():
    try:
        read_keys(nested(5000, True), implicit=False, little=True)
    except Malformed as exc:
        assert "nested" in str(exc)
    else:
        raise AssertionError("5000 nested sequences were accepted")
