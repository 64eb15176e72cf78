"""Property tests of STOW-RS's request parsing: the archive's multipart reader (dicomweb/multipart.py) and
the file meta check of a part, on bodies hypothesis makes up.

The bodies go over a real connection to an aiohttp server in this process (a thread with its own loop)
whose handler reads the parts as STOW-RS does, sent in the pieces a network might deliver.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from server_under_test.dicomweb.multipart import MultipartReader
from server_under_test.dicomweb.stow import PartError, file_meta

BOUNDARY = "b0undary"
BLOCK = 100  # small blocks, so a part spans several and a delimiter falls across them
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


async def parts_as_stow_reads_them(request: web.Request) -> web.Response:
    parts = []
    try:
        reader = MultipartReader(request.content, BOUNDARY, 5.0, block=BLOCK)
        while (await reader.next_part()) is not None:
            chunks = []
            while block := await reader.read_block():
                chunks.extend(bytes(b) for b in block)
            parts.append(b"".join(chunks).hex())
    except (ValueError, BadHttpMessage) as exc:  # as STOW-RS catches them: a 400
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(parts)


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


def post(port: int, body: bytes, cuts: list[int]) -> tuple[int, object]:
    """POST the body in pieces split at `cuts`; the status and the parts (or the error) the server read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/parts")
        connection.putheader("Content-Type", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        last = 0
        for cut in sorted({c % (len(body) + 1) for c in cuts} | {len(body)}):
            connection.send(body[last:cut])
            last = cut
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@settings(max_examples=150, deadline=None)
@given(bodies, st.lists(st.integers(min_value=0, max_value=10_000), max_size=6))
def test_parts_come_out_as_they_went_in(server, parts, cuts):
    assert post(server, body_of(parts), cuts) == (200, [p.hex() for p in parts])


@settings(max_examples=150, deadline=None)
@given(bodies, st.integers(min_value=1), st.lists(st.integers(min_value=0, max_value=10_000), max_size=4))
def test_a_cut_body_never_gives_a_cut_part(server, parts, keep, cuts):
    """A body cut short fails, or gives only whole parts: never the beginning of a part as if it were all of it."""
    body = body_of(parts)
    status, got = post(server, body[: keep % len(body)], cuts)
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
