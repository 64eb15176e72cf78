"""A null DICOMweb peer for calibrating the DICOMweb users: a STOW-RS sink that reads and discards, a WADO-RS source.

The HTTP twin of calibration's DIMSE null sink (storescp --ignore) and null source
(bench.load.retrieval_source). A POST to /studies or /studies/{study} is read to its end and
discarded, then answered 200 with an empty DICOM JSON object: nothing is parsed, written or
indexed. A GET of /studies/{study} answers, whatever study is asked for, with one pool study as
multipart/related application/dicom (Part 10 copies made once at start, the studies in turn). So
the rate the harness reaches against it is the harness's own. It runs as its own process
(`python -m bench.load.web_null_peer`), so it does not share the harness's core, on aiohttp, the
archive's HTTP server (chosen by measurement, docs/archive.md).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import uuid

from aiohttp import web

from bench.load.dicomweb import APPLICATION_DICOM, DICOM_JSON
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile

BASE_PATH = "/dicom-web"
READY_PATH = f"{BASE_PATH}/ready"
READ_CHUNK = 1 << 20
MAX_REQUEST = 1 << 31  # what one STOW-RS body may hold: the calibration's bodies are whole pool studies


def study_bodies(pool: StudyPool) -> list[tuple[bytes, str]]:
    """One WADO-RS answer per pool study: its multipart body (a copy of each instance as a Part 10 file) and
    Content-Type."""
    bodies = []
    for _ in pool.studies:
        boundary = uuid.uuid4().hex
        parts = [
            f"--{boundary}\r\nContent-Type: {APPLICATION_DICOM}\r\n\r\n".encode()
            + b"".join(bytes(chunk) for chunk in instance.part10_chunks())
            + b"\r\n"
            for instance in pool.next_study()
        ]
        content_type = f'multipart/related; type="{APPLICATION_DICOM}"; boundary={boundary}'
        bodies.append((b"".join(parts) + f"--{boundary}--\r\n".encode(), content_type))
    return bodies


def make_app(pool: StudyPool) -> web.Application:
    answers = itertools.cycle(study_bodies(pool))

    async def discard(request: web.Request) -> web.Response:
        while await request.content.read(READ_CHUNK):
            pass
        return web.Response(body=b"{}", content_type=DICOM_JSON)

    async def study(request: web.Request) -> web.Response:
        body, content_type = next(answers)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type  # aiohttp's content_type= would drop the boundary
        return response

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application(client_max_size=MAX_REQUEST)
    app.router.add_post(f"{BASE_PATH}/studies", discard)
    app.router.add_post(f"{BASE_PATH}/studies/{{study}}", discard)
    app.router.add_get(f"{BASE_PATH}/studies/{{study}}", study)
    app.router.add_get(READY_PATH, ready)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load.web_null_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--transfer-syntax", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pool = StudyPool.prepare(load_profile(args.profile), 2, 1, progress=False, transfer_syntax=args.transfer_syntax)
    web.run_app(make_app(pool), host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
