"""Hostile HTTP input to the archive's DICOMweb side: each case gets a 4xx (413, 408, 400) or a closed connection,
leaves no file and no index row, and the archive still answers DIMSE and HTTP with its memory bounded.

One archive for the module with tight bounds (4 MB bodies, 2 s timeout). Each case prints one row of the
hostile-input table (`pytest -s`): case, answer, still up, files/rows left, RSS growth.
"""

from __future__ import annotations

import copy
import resource
import socket
import time
from urllib.parse import urlsplit

import psutil
import pytest
import requests
from helpers.archive import client
from helpers.dicomweb import BOUNDARY, STOW_TYPE, index_count, multipart, part10, start_web_archive, stored_files
from pydicom import dcmread
from pydicom.uid import generate_uid

BOUND = 4 << 20
TIMEOUT = 2.0
CONFIG = f"[dicomweb]\nmax_request = {BOUND}\ntimeout = {TIMEOUT}\nmax_requests = 8\n"
WAIT = 15.0  # at most this long for the archive to answer or close a hostile connection
IDLE_CONNECTIONS = 1000
RSS_BOUND = 100 << 20  # bytes the archive's processes may grow by during one case


class Web:
    def __init__(self, archive, url: str):
        self.archive, self.url = archive, url
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)

    def rss(self) -> int:
        process = psutil.Process(self.archive.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=WAIT)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    archive, url = start_web_archive(tmp_path_factory.mktemp("hostile") / "archive", CONFIG)
    yield Web(archive, url)
    archive.stop()


@pytest.fixture(scope="module")
def instance(tiny_studies):
    """A PS3.10 file of about 1.3 MB (the tiny study's first run) with fresh UIDs."""
    ds = copy.deepcopy(dcmread(sorted((tiny_studies / "study-0000").glob("*.dcm"))[0]))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds, part10(ds)


@pytest.fixture
def case(web):
    """Runs around one case: nothing stored by it, DIMSE and HTTP still answering, RSS bounded; prints the row."""
    files, rows, rss = len(stored_files(web.archive)), index_count(web.archive), web.rss()
    answers: list[str] = []
    yield answers
    assoc, _ = client(web.archive)
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    assert requests.get(f"{web.url}/studies", params={"limit": "1"}, timeout=WAIT).status_code in (200, 204)
    left_files, left_rows = len(stored_files(web.archive)) - files, index_count(web.archive) - rows
    growth = web.rss() - rss
    print(
        f"\n| {answers[0]} | {answers[1]} | DIMSE and HTTP answer | {left_files} files, {left_rows} rows | "
        f"{growth / 1e6:+.1f} MB |"
    )
    assert (left_files, left_rows) == (0, 0)
    assert growth < RSS_BOUND


def read_answer(sock: socket.socket) -> bytes:
    """What the archive sends until it closes the connection or WAIT passes (b'' for a bare close)."""
    data, deadline = b"", time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
        if _complete(data):
            break
    return data


def _complete(data: bytes) -> bool:
    """A whole response: headers and as many body bytes as they announce."""
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def status_of(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "connection closed"


def stow_head(length: int | None, path: str = "/dicom-web/studies", content_type: str = STOW_TYPE) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: archive\r\nContent-Type: {content_type}\r\n{size}\r\n\r\n".encode()


def send_all(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass  # the archive closed first: its answer, if any, is still read


def test_declared_body_over_the_bound(web, case):
    with web.connect() as sock:
        send_all(sock, stow_head(BOUND + 1) + b"x" * 1000)
        answer = read_answer(sock)
    case[:] = ["Content-Length over max_request", status_of(answer)]
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_body_over_the_bound(web, case, instance):
    ds, data = instance
    body = multipart([data + b"\0" * BOUND])  # one part past the bound: cut while the store writes it
    assert len(body) > BOUND
    with web.connect() as sock:
        send_all(sock, stow_head(None))
        for start in range(0, len(body), 1 << 20):
            chunk = body[start : start + (1 << 20)]
            send_all(sock, f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        send_all(sock, b"0\r\n\r\n")
        answer = read_answer(sock)
    case[:] = ["chunked body over max_request", status_of(answer)]
    assert answer.startswith(b"HTTP/1.1 413") or not answer


def test_body_longer_than_content_length(web, case, instance):
    """The declared length ends inside the part: the part is cut, not stored; the rest is a broken request."""
    ds, data = instance
    body = multipart([data])
    with web.connect() as sock:
        send_all(sock, stow_head(len(body) // 2) + body)
        answer = read_answer(sock)
    case[:] = ["body longer than its Content-Length", status_of(answer)]
    assert answer.startswith(b"HTTP/1.1 400") or not answer
    assert b"HTTP/1.1 200" not in answer and b"HTTP/1.1 202" not in answer


def test_broken_boundary(web, case, instance):
    ds, data = instance
    body = multipart([data], boundary="not-the-declared-one")
    answer = requests.post(f"{web.url}/studies", data=body, headers={"Content-Type": STOW_TYPE}, timeout=WAIT)
    case[:] = ["broken multipart boundary", f"HTTP/1.1 {answer.status_code}"]
    assert answer.status_code == 400


def test_unterminated_multipart(web, case, instance):
    ds, data = instance
    body = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data  # no closing delimiter
    answer = requests.post(f"{web.url}/studies", data=body, headers={"Content-Type": STOW_TYPE}, timeout=WAIT)
    case[:] = ["multipart without its closing boundary", f"HTTP/1.1 {answer.status_code}"]
    assert answer.status_code == 400


def test_non_dicom_parts(web, case, instance):
    ds, data = instance
    meta_length = 12 + int.from_bytes(data[140:144], "little")
    garbage_dataset = data[: 132 + meta_length] + b"\xff" * 4096
    parts = [b"plain text, not DICOM", b"\0" * 128 + b"DICM" + b"\xff" * 200, garbage_dataset]
    answer = requests.post(
        f"{web.url}/studies", data=multipart(parts), headers={"Content-Type": STOW_TYPE}, timeout=WAIT
    )
    case[:] = ["non-DICOM parts (text, a damaged meta, a meta then garbage)", f"HTTP/1.1 {answer.status_code}"]
    assert answer.status_code == 409
    reasons = [item["00081197"]["Value"][0] for item in answer.json()["00081198"]["Value"]]
    assert len(reasons) == 3 and all(r >= 0xA700 for r in reasons)


@pytest.mark.parametrize(
    "path",
    [
        "/dicom-web/studies/../../../etc/passwd",
        "/dicom-web/studies/1.2.3/series/..%2F..%2Fetc",
        "/dicom-web/studies/not-a-uid",
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/" + "1" * 65,
        "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/0x1",
    ],
)
def test_bad_paths(web, case, path):
    with web.connect() as sock:
        send_all(sock, f"GET {path} HTTP/1.1\r\nHost: archive\r\nConnection: close\r\n\r\n".encode())
        answer = read_answer(sock)
    case[:] = [f"GET {path[:50]}", status_of(answer)]
    assert answer[9:10] == b"4"  # HTTP/1.1 4xx


def test_slowloris_headers(web, case):
    """Headers a byte at a time: the connection is closed once the timeout passes, whatever is still coming."""
    head = stow_head(1000)
    with web.connect() as sock:
        sock.settimeout(0.3)
        sent, closed, deadline = 0, False, time.monotonic() + WAIT
        while not closed and time.monotonic() < deadline and sent < len(head):
            send_all(sock, head[sent : sent + 1])
            sent += 1
            try:
                closed = sock.recv(1024) == b""
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed = True
    case[:] = ["slowloris: headers a byte every 0.3 s", "connection closed" if closed else "still open"]
    assert closed and sent < len(head)


def test_slow_body(web, case, instance):
    """A body that stops halfway: 408 (or a close) after the timeout, and the half-written instance is gone."""
    ds, data = instance
    body = multipart([data])
    with web.connect() as sock:
        send_all(sock, stow_head(len(body)) + body[: len(body) // 2])
        answer = read_answer(sock)
    case[:] = ["body stops halfway", status_of(answer)]
    assert answer.startswith(b"HTTP/1.1 408") or not answer


def test_idle_connections(web, case):
    """1,000 connections that send nothing: the archive still answers, and closes them after the timeout."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, IDLE_CONNECTIONS + 200), hard))
    sockets = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            sockets.append(web.connect())
        answer = requests.get(f"{web.url}/studies", params={"limit": "1"}, timeout=WAIT)
        assert answer.status_code in (200, 204)
        deadline = time.monotonic() + WAIT
        closed = 0
        for sock in sockets[:20]:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += sock.recv(1) == b""
            except (socket.timeout, ConnectionResetError):
                pass
    finally:
        for sock in sockets:
            sock.close()
    case[:] = [f"{IDLE_CONNECTIONS} idle connections", f"answered meanwhile; {closed}/20 sampled closed by the archive"]
    assert closed == 20
