"""Property tests of STOW-RS's request parsing: the archive's multipart splitter (dicomweb/multipart.py) over
both body sources (dicomweb/body.py), and the file meta check of a part, on bodies hypothesis makes up.

The bodies go over a real connection to an aiohttp server in this process (a thread with its own loop) whose
handler reads the parts as STOW-RS does (in a thread, into a staging sink), sent in the pieces a network
might deliver, with a declared length (read from the socket) or chunked (read through aiohttp's stream).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import mmap
import threading
from io import BytesIO

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from server_under_test.dicomweb import body
from server_under_test.dicomweb.multipart import Splitter
from server_under_test.dicomweb.stow import PartError, file_meta

BOUNDARY = "b0undary"
READ = 100  # small reads, so a part spans several and a delimiter falls across them
STAGING = 300  # a small staging buffer, so a part spans several and receives land at their ends
MIN_DIRECT = 40
# Bytes that look like boundaries, line ends and part headers, so parts contain near-misses of the delimiter.
TRICKY = [b"\r\n", b"--", BOUNDARY.encode(), b"\r\n--" + BOUNDARY.encode()[:-1], b"\r\n--b0undar", b"Content-Type:"]
# A sender picks a boundary its parts do not contain (RFC 2046 5.1.1): parts with "--b0undary" are not bodies.
part_bytes = (
    st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(TRICKY)), max_size=24)
    .map(b"".join)
    .filter(lambda part: b"--" + BOUNDARY.encode() not in part)
)
bodies = st.lists(part_bytes, min_size=1, max_size=5)


def body_of(parts: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


class StagingSink:
    """The store's sink in small: space() in a reused mmap buffer, advance(n), write(chunks)."""

    def __init__(self):
        self.buffer, self.staged, self.out = mmap.mmap(-1, STAGING), 0, bytearray()

    def space(self) -> memoryview:
        if self.staged == STAGING:
            self.out += self.buffer[:]
            self.staged = 0
        return memoryview(self.buffer)[self.staged :]

    def advance(self, count: int) -> None:
        self.staged += count

    def write(self, chunks) -> None:
        for chunk in chunks:
            data = memoryview(chunk).cast("B")
            while len(data):
                space = self.space()
                take = min(len(space), len(data))
                space[:take] = data[:take]
                self.advance(take)
                data = data[take:]

    def value(self) -> bytes:
        return bytes(self.out) + self.buffer[: self.staged]


def split(splitter: Splitter) -> list[str]:
    """The parts as STOW-RS reads them: a head through memory, the rest straight into the sink."""
    parts = []
    while splitter.next_part() is not None:
        sink = StagingSink()
        sink.write([splitter.read()])
        splitter.stream_into(sink)
        parts.append(sink.value().hex())
    return parts


async def parts_as_stow_reads_them(request: web.Request) -> web.Response:
    wire, already_read, closing = body.open_body(request, 5.0, 1 << 20)
    try:
        splitter = Splitter(wire, BOUNDARY, already_read, read=READ, min_direct=MIN_DIRECT)
        parts = await asyncio.get_running_loop().run_in_executor(None, split, splitter)
        response = web.json_response(parts)
    except (ValueError, BadHttpMessage, ConnectionError) as exc:  # as STOW-RS catches them: a 400
        response = web.json_response({"error": str(exc)}, status=400)
    finally:
        wire.close()
    if closing:
        response.force_close()
    return response


@pytest.fixture(scope="module")
def server():
    """An aiohttp server on a free local port, in a thread; its port."""
    started, stop, port = threading.Event(), [], []

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/parts", parts_as_stow_reads_them)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])
        stopped = asyncio.Event()
        stop.append((asyncio.get_running_loop(), stopped))
        started.set()
        await stopped.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield port[0]
    loop, stopped = stop[0]
    loop.call_soon_threadsafe(stopped.set)
    thread.join(10)


def post(port: int, body: bytes, cuts: list[int], chunked: bool = False) -> tuple[int, object]:
    """POST the body in pieces split at `cuts` (chunked: one chunk each); the status and the parts (or the
    error) the server read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/parts")
        connection.putheader("Content-Type", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        last = 0
        for cut in sorted({c % (len(body) + 1) for c in cuts} | {len(body)}):
            piece = body[last:cut]
            if chunked and piece:
                piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            connection.send(piece)
            last = cut
        if chunked:
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@settings(max_examples=150, deadline=None)
@given(bodies, st.lists(st.integers(min_value=0, max_value=10_000), max_size=6), st.booleans())
def test_parts_come_out_as_they_went_in(server, parts, cuts, chunked):
    assert post(server, body_of(parts), cuts, chunked) == (200, [p.hex() for p in parts])


@settings(max_examples=150, deadline=None)
@given(bodies, st.integers(min_value=1), st.lists(st.integers(min_value=0, max_value=10_000), max_size=4))
def test_a_cut_body_never_gives_a_cut_part(server, parts, keep, cuts):
    """A body cut short fails, or gives only whole parts: never the beginning of a part as if it were all of it."""
    whole = body_of(parts)
    status, got = post(server, whole[: keep % len(whole)], cuts)
    assert status == 400 or got == [p.hex() for p in parts[: len(got)]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_file_meta_of_any_bytes_is_a_meta_or_a_part_error(data, with_prefix):
    head = (b"\0" * 128 + b"DICM" + data) if with_prefix else data
    try:
        meta = file_meta(head)
    except PartError as exc:
        assert exc.reason >= 0xA700
    else:
        assert meta.dataset_offset <= len(head) and meta.sop_uid


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])  # odd and even lengths: padded with NUL or not
def test_file_meta_reads_what_pydicom_reads(sop_uid):
    """The archive's own walk over the file meta group gives pydicom's values and the dataset's offset."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "ANY"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = CTImageStorage, sop_uid, "P"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    meta = file_meta(data)
    read = dcmread(BytesIO(data))
    assert (meta.sop_class, meta.sop_uid, meta.transfer_syntax) == (CTImageStorage, sop_uid, ExplicitVRLittleEndian)
    assert data[meta.dataset_offset :].startswith(b"\x08\x00\x16\x00UI")  # (0008,0016), the dataset's first
    assert read.file_meta.MediaStorageSOPInstanceUID == meta.sop_uid
