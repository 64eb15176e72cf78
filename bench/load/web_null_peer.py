"""A null DICOMweb peer for calibrating the DICOMweb users: a STOW-RS sink that reads and discards, a WADO-RS source.

The HTTP twin of calibration's DIMSE null sink (storescp --ignore) and null source
(bench.load.retrieval_source). A POST to /studies or /studies/{study} is read to its end and
discarded, then answered 200 with an empty DICOM JSON object: nothing is parsed, written or
indexed. A GET of /studies/{study} answers, whatever study is asked for, with one pool study as
multipart/related application/dicom (Part 10 copies made once at start, the studies in turn). So
the rate the harness reaches against it is the harness's own. It runs as its own process
(`python -m bench.load.web_null_peer`), so it does not share the harness's core.

It is the standard library's threading HTTP/1.1 server (keep-alive, one thread per connection,
blocking sends), not aiohttp, the archive's server: a null peer must outrun the harness, and against
aiohttp's event loop the wado users' path reached a median 107 MB/s (96-173), against this one 181
(178-234); the stow path 305 (293-749) and 289 (243-327): within noise (dsa-unit, 5 alternated rounds
on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.load.dicomweb import APPLICATION_DICOM, DICOM_JSON
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile

BASE_PATH = "/dicom-web"
READY_PATH = f"{BASE_PATH}/ready"
READ_CHUNK = 1 << 20


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


class NullPeer(BaseHTTPRequestHandler):
    """One keep-alive connection: POSTs read and discarded, GETs answered with the next pool study."""

    protocol_version = "HTTP/1.1"
    answers: itertools.cycle  # of study_bodies, set by make_server
    lock = threading.Lock()  # the answers are taken in turn by the connections' threads

    def do_POST(self) -> None:
        left = int(self.headers.get("Content-Length") or 0)
        buffer = memoryview(bytearray(READ_CHUNK))
        while left > 0:
            got = self.rfile.readinto(buffer[: min(left, READ_CHUNK)])
            if not got:
                return  # the client went away
            left -= got
        self.answer(b"{}", DICOM_JSON)

    def do_GET(self) -> None:
        if self.path == READY_PATH:
            self.answer(b"ready", "text/plain")
        elif self.path.startswith(f"{BASE_PATH}/studies/"):
            with self.lock:
                body, content_type = next(self.answers)
            self.answer(body, content_type)
        else:
            self.send_error(404)

    def answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # nothing per request: the calibration counts what matters


def make_server(pool: StudyPool, port: int) -> ThreadingHTTPServer:
    handler = type("PoolNullPeer", (NullPeer,), {"answers": itertools.cycle(study_bodies(pool))})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load.web_null_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--transfer-syntax", default=None)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pool = StudyPool.prepare(load_profile(args.profile), 2, 1, progress=False, transfer_syntax=args.transfer_syntax)
    make_server(pool, args.port).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
