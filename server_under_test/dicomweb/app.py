"""The DICOMweb routes under /dicom-web, their bounds, and the aiohttp server each worker runs beside DIMSE.

aiohttp was chosen by measurement (docs/archive.md, DICOMweb): it read request bodies fastest of four
candidates, and runs as one asyncio loop in a thread of each worker process, accepting on the DICOMweb
socket the supervisor bound (as the workers share the DICOM one). Blocking work (the store's durable
write, SQLite, file reads) runs in a thread pool the size of the worker's share of `max_requests`; a
request over that share gets 503, as an association over max_associations is rejected. A STOW-RS body is
split by multipart.py in the threads that store its parts, each receiving its part from the socket straight
into the store's staging buffer (body.py: the body is taken over from aiohttp), each read within `timeout`.
No CORS headers: browsers on other origins are refused, as by default.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from server_under_test.config import DicomwebEndpoint
from server_under_test.dicomweb import body, parts, qido, stow, wado
from server_under_test.dicomweb.multipart import Splitter
from server_under_test.services.connection import ACCEPT_POLL_SECONDS, HAND_OFF_SECONDS
from server_under_test.services.query import IMAGE, SERIES, STUDY
from server_under_test.services.store import StoreService
from server_under_test.storage.files import BadUID, check_uid
from server_under_test.storage.index import Index

log = logging.getLogger("server_under_test.dicomweb")

BASE_PATH = "/dicom-web"
READ_BUFFER = 1 << 20  # a connection's receive buffer before aiohttp pauses reading (its default: 64 KB)
DICOM_JSON = "application/dicom+json"
UID_FIELDS = ("study", "series", "instance")
FRAME_LIST = re.compile(r"[0-9]+(,[0-9]+)*")
MAX_FRAMES = 10_000  # frame numbers in one request


@dataclass
class Archive:
    """What the routes use: this worker's index and store, the bounds, and the pool for blocking work."""

    index: Index
    store: StoreService
    endpoint: DicomwebEndpoint
    pool: ThreadPoolExecutor
    slots: int  # requests in progress in this worker

    def base_url(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.headers.get('Host') or request.host}{BASE_PATH}"


ARCHIVE = web.AppKey("archive", Archive)
IN_PROGRESS = web.AppKey("in_progress", list)


def _dicom_json(body, status: int = 200, headers: dict | None = None) -> web.Response:
    # Exactly "application/dicom+json", without a charset parameter (JSON is UTF-8): clients compare it whole.
    return web.Response(
        body=json.dumps(body).encode(), status=status, headers={"Content-Type": DICOM_JSON, **(headers or {})}
    )


def _too_large(limit: int, size: int) -> web.HTTPException:
    text = f"the body is larger than {limit} bytes (max_request)\n"
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size, text=text, content_type="text/plain")


def _error(status: type[web.HTTPException], text: str) -> web.HTTPException:
    return status(text=text + "\n", content_type="text/plain")


@web.middleware
async def bounded(request: web.Request, handler):
    """At most `slots` requests at once in this worker (503 beyond); the path's UIDs checked before routing."""
    archive = request.app[ARCHIVE]
    for name in UID_FIELDS:
        value = request.match_info.get(name)
        if value is not None:
            try:
                check_uid(value, name)
            except BadUID as exc:
                raise _error(web.HTTPBadRequest, str(exc)) from None
    counter = request.app[IN_PROGRESS]
    if counter[0] >= archive.slots:
        raise _error(web.HTTPServiceUnavailable, "too many requests in progress")
    counter[0] += 1
    try:
        return await handler(request)
    finally:
        counter[0] -= 1


async def _blocking(request: web.Request, function, *args):
    archive = request.app[ARCHIVE]
    return await asyncio.get_running_loop().run_in_executor(archive.pool, partial(function, *args))


def _on_index(index: Index, function, *args):
    """`function(db, *args)` with the calling thread's read connection (SQLite's are not shared by threads)."""
    return function(index.reader, *args)


async def _reading(request: web.Request, function, *args):
    """`function(db, *args)` in the pool, on the index."""
    return await _blocking(request, _on_index, request.app[ARCHIVE].index, function, *args)


# -- STOW-RS ----------------------------------------------------------------------------
def _check_stow_request(request: web.Request, endpoint: DicomwebEndpoint) -> str:
    """The request's boundary, once its media type and declared length are acceptable."""
    if request.content_type != "multipart/related":
        raise _error(web.HTTPUnsupportedMediaType, 'STOW-RS takes multipart/related; type="application/dicom"')
    kind = request.headers.get("Content-Type", "")
    params = {k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in kind.split(";")[1:])}
    if params.get("type", "application/dicom").lower() != "application/dicom":
        raise _error(web.HTTPUnsupportedMediaType, "only application/dicom parts are accepted (no JSON or XML)")
    if request.content_length is not None and request.content_length > endpoint.max_request:
        raise _too_large(endpoint.max_request, request.content_length)
    if not params.get("boundary"):
        raise _error(web.HTTPBadRequest, "the Content-Type has no boundary")
    return params["boundary"]


async def _store_parts(request: web.Request, splitter: Splitter, wire, study: str | None) -> list:
    """The parts' outcomes, once every part is stored or has failed (parts.py: off the event loop)."""
    archive = request.app[ARCHIVE]
    stored = parts.RequestParts(archive.pool, archive.store, splitter, wire, study, asyncio.get_running_loop())
    stored.start()
    try:
        await asyncio.shield(stored.done)
    except asyncio.CancelledError:
        stored.abort()
        await stored.done  # every thread ends (and discards what it wrote) before the handler does
        raise
    if stored.error is not None:
        raise stored.error
    return stored.outcomes


async def stow_rs(request: web.Request) -> web.Response:
    archive = request.app[ARCHIVE]
    endpoint = archive.endpoint
    boundary = _check_stow_request(request, endpoint)
    study = request.match_info.get("study")
    wire, already_read, closing = body.open_body(request, endpoint.timeout, endpoint.max_request)
    try:
        response = await _stow_answer(request, wire, already_read, boundary, study)
    except web.HTTPException as exc:
        if closing:
            exc.force_close()
        raise
    finally:
        wire.close()
    if closing:
        response.force_close()
    return response


async def _stow_answer(request: web.Request, wire, already_read: bytes, boundary: str, study: str | None):
    archive = request.app[ARCHIVE]
    endpoint = archive.endpoint
    try:
        outcomes = await _store_parts(request, Splitter(wire, boundary, already_read), wire, study)
    except body.TooLarge:
        raise _too_large(endpoint.max_request, wire.read) from None
    except (asyncio.TimeoutError, TimeoutError):
        raise _error(web.HTTPRequestTimeout, f"the client sent nothing for {endpoint.timeout:g} s") from None
    except (ValueError, BadHttpMessage, ConnectionError) as exc:  # a broken boundary, a cut body, a broken chunk
        raise _error(web.HTTPBadRequest, f"the multipart body does not parse: {exc}"[:300]) from None
    if not outcomes:
        raise _error(web.HTTPBadRequest, "the request has no parts")
    for outcome in outcomes:
        if not outcome.stored:
            log.warning("STOW-RS %s: 0x%04X %s", outcome.sop_uid or "(no UID)", outcome.status, outcome.comment)
    status, answer = stow.response(outcomes, archive.base_url(request), study)
    return _dicom_json(answer, status)


# -- QIDO-RS ----------------------------------------------------------------------------
def _qido(level: str):
    async def handler(request: web.Request) -> web.Response:
        archive = request.app[ARCHIVE]
        fixed = {}
        if "study" in request.match_info:
            fixed["StudyInstanceUID"] = request.match_info["study"]
        if "series" in request.match_info:
            fixed["SeriesInstanceUID"] = request.match_info["series"]
        try:
            search = qido.parse(level, list(request.query.items()), fixed)
        except qido.SearchError as exc:
            raise _error(web.HTTPBadRequest, str(exc)) from None
        body, count, more = await _reading(request, qido.run, search, archive.base_url(request))
        headers = {"Warning": '299 pacsbench "There are additional results that can be requested"'} if more else {}
        if not count:
            return web.Response(status=204, headers=headers)
        return web.Response(body=body, headers={"Content-Type": DICOM_JSON, **headers})

    return handler


# -- WADO-RS ----------------------------------------------------------------------------
def _uids(request: web.Request) -> tuple[str, str | None, str | None]:
    info = request.match_info
    return info["study"], info.get("series"), info.get("instance")


async def _stored(request: web.Request) -> list[wado.Stored]:
    try:
        return await _reading(request, wado.instances, *_uids(request))
    except wado.NotFound as exc:
        raise _error(web.HTTPNotFound, str(exc)) from None


async def _multipart(request: web.Request, kind: str) -> tuple[web.StreamResponse, str]:
    boundary = uuid.uuid4().hex
    response = web.StreamResponse(
        headers={"Content-Type": f'multipart/related; type="{kind}"; boundary={boundary}'},
    )
    await response.prepare(request)
    return response, boundary


async def wado_instances(request: web.Request) -> web.StreamResponse:
    """The instances as multipart/related application/dicom, each file sent by the kernel (sendfile).

    The body's length is known before it starts (the files' sizes), so it goes out with a Content-Length and
    the files' bytes need no chunk framing: asyncio's sendfile, as aiohttp's FileResponse sends a file
    (measured: reading 1 MB at a time in the pool cost 2.4-3.4 ms of archive CPU per 2 MB instance against
    C-GET's 1.0-1.5). A file gone between that count and its turn cuts the answer short (the client sees a
    body shorter than announced), as nothing else can be said by then."""
    stored = await _reading(request, wado.on_disk, await _stored(request))
    boundary = uuid.uuid4().hex
    heads = [
        f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={instance.transfer_syntax}\r\n"
        f"Content-Length: {instance.size}\r\n\r\n".encode()
        for instance in stored
    ]
    closing = f"--{boundary}--\r\n".encode()
    response = web.StreamResponse(
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    )
    response.content_length = sum(len(head) + i.size + 2 for head, i in zip(heads, stored)) + len(closing)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    for head, instance in zip(heads, stored):
        await response.write(head)
        try:
            f = await _reading(request, wado.open_stored, instance)
        except (wado.NotFound, OSError) as exc:
            log.warning("WADO-RS %s: %s; the answer is cut short", instance.sop_uid, exc)
            raise ConnectionResetError(str(exc)) from None
        with f:
            if request.transport is None:
                raise ConnectionResetError("the client went away")
            sent = await loop.sendfile(request.transport, f, 0, instance.size)
        if sent != instance.size:
            raise ConnectionResetError(f"{instance.sop_uid} changed while it was sent")
        await response.write(b"\r\n")
    await response.write(closing)
    await response.write_eof()
    return response


async def wado_metadata(request: web.Request) -> web.Response:
    stored = await _stored(request)

    try:
        body = await _reading(request, wado.metadata_of, stored)
    except wado.NotFound as exc:
        raise _error(web.HTTPNotFound, str(exc)) from None
    return _dicom_json(body)


async def wado_frames(request: web.Request) -> web.StreamResponse:
    """The frames asked for as multipart/related application/octet-stream parts, cut from the stored file."""
    listed = request.match_info["frames"]
    if not FRAME_LIST.fullmatch(listed) or listed.count(",") >= MAX_FRAMES:
        raise _error(web.HTTPBadRequest, "frames: a comma-separated list of frame numbers from 1")
    numbers = [int(n) for n in listed.split(",")]
    (instance,) = await _stored(request)
    try:
        syntax, frames = await _reading(request, wado.frames, instance, numbers)
    except wado.NotFound as exc:
        raise _error(web.HTTPNotFound, str(exc)) from None
    except wado.NotAcceptable as exc:
        raise _error(web.HTTPNotAcceptable, str(exc)) from None
    kind = "application/octet-stream"
    if syntax.is_encapsulated:
        accept = request.headers.get("Accept", "*/*")
        if "*/*" not in accept and "transfer-syntax=*" not in accept and str(syntax) not in accept:
            raise _error(web.HTTPNotAcceptable, f"the frames are stored as {syntax}: ask for transfer-syntax=*")
        kind += f"; transfer-syntax={syntax}"
    response, boundary = await _multipart(request, "application/octet-stream")
    for frame in frames:
        head = f"--{boundary}\r\nContent-Type: {kind}\r\nContent-Length: {len(frame)}\r\n\r\n"
        await response.write(head.encode())
        await response.write(frame)
        await response.write(b"\r\n")
    await response.write(f"--{boundary}--\r\n".encode())
    await response.write_eof()
    return response


# -- the application and its server -----------------------------------------------------
def make_app(archive: Archive) -> web.Application:
    app = web.Application(middlewares=[bounded], client_max_size=1 << 20, handler_args={"max_field_size": 8190})
    app[ARCHIVE] = archive
    app[IN_PROGRESS] = [0]
    study, series, instance = "/studies/{study}", "/series/{series}", "/instances/{instance}"
    b = BASE_PATH
    app.router.add_post(f"{b}/studies", stow_rs)
    app.router.add_post(f"{b}{study}", stow_rs)
    app.router.add_get(f"{b}/studies", _qido(STUDY))
    app.router.add_get(f"{b}/series", _qido(SERIES))
    app.router.add_get(f"{b}/instances", _qido(IMAGE))
    app.router.add_get(f"{b}{study}/series", _qido(SERIES))
    app.router.add_get(f"{b}{study}/instances", _qido(IMAGE))
    app.router.add_get(f"{b}{study}{series}/instances", _qido(IMAGE))
    for path in (f"{b}{study}", f"{b}{study}{series}", f"{b}{study}{series}{instance}"):
        app.router.add_get(path, wado_instances)
        app.router.add_get(f"{path}/metadata", wado_metadata)
    app.router.add_get(f"{b}{study}{series}{instance}/frames/{{frames}}", wado_frames)
    return app


class DicomwebServer:
    """aiohttp on an already bound socket, in its own thread with its own event loop; stop() ends it.

    `connections` (a ConnectionBalance shared by the workers) spreads new connections over the workers."""

    def __init__(
        self,
        sock,
        index: Index,
        store: StoreService,
        endpoint: DicomwebEndpoint,
        workers: int,
        grace: float,
        number: int = 0,
        connections=None,
    ):
        slots = max(1, endpoint.max_requests // max(1, workers))
        pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="dicomweb")
        self.archive = Archive(index, store, endpoint, pool, slots)
        self.sock = sock
        self.grace = grace
        self.number, self.connections = number, connections
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped: asyncio.Event | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dicomweb", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.started.wait(30)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        runner = web.AppRunner(
            make_app(self.archive),
            access_log=None,
            # An idle connection (before its first request too) is closed after the timeout: slow or
            # silent clients do not hold a connection for long.
            keepalive_timeout=self.archive.endpoint.timeout,
            read_bufsize=READ_BUFFER,
            shutdown_timeout=self.grace,
            handle_signals=False,
        )
        await runner.setup()
        accepting = asyncio.create_task(self._accept(runner.server))
        self.started.set()
        await self.stopped.wait()
        accepting.cancel()
        await runner.cleanup()
        self.archive.pool.shutdown(wait=False, cancel_futures=True)

    async def _accept(self, server: web.Server) -> None:
        """Accept connections one at a time, a worker with more connections than another that is looking leaving
        each new one to it (services.connection.ConnectionBalance).

        asyncio's own server takes every pending connection at once: a burst of clients all went to one
        worker, and STOW-RS from 4 clients ran no faster than from 1 (measured)."""
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        balance = self.connections
        while True:
            if balance is not None:
                balance.counts[self.number] = len(server.connections)
                balance.beat(self.number)
            if not await self._readable(ACCEPT_POLL_SECONDS):
                continue
            if balance is not None and balance.leave_to_another(self.number):
                await asyncio.sleep(HAND_OFF_SECONDS)
                continue
            try:
                connection, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                continue  # another worker took it
            except OSError as exc:  # out of file descriptors, say: the connection waits in the backlog
                log.error("DICOMweb accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            await loop.connect_accepted_socket(server, connection)

    async def _readable(self, timeout: float) -> bool:
        """Whether a connection waits on the socket within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        waiting = loop.create_future()
        loop.add_reader(self.sock.fileno(), lambda: waiting.done() or waiting.set_result(True))
        try:
            return await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self.sock.fileno())

    def stop(self) -> None:
        if self.loop is not None and self.stopped is not None:
            self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(self.grace + 5)
