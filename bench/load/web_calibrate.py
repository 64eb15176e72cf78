"""The DICOMweb side of `calibrate`: how fast the stow and wado users' paths are alone, against a null DICOMweb peer.

STOW-RS: fresh pool copies as the stow users send them (a whole study's multipart body built per
POST, in the timed loop as in a run) into a sink that reads and discards (bench.load.web_null_peer).
WADO-RS: whole studies as the wado users retrieve them (multipart application/dicom read as it
streams in, each part read as a Part 10 file) from the same peer, which answers with pool studies
it built once. One geventhttpclient connection under gevent, as a locust FastHttpUser has; the peer
in its own process. bench.load.calibrate keeps the figures beside the DIMSE ceilings, under the
same fingerprint.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import psutil
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

from bench.common.errors import UserError
from bench.common.processes import free_local_port, stop_process
from bench.load.dicomweb import DICOM_JSON, WADO_ACCEPT, Answer, read_instances, stow_body
from bench.load.send import SendResult
from bench.load.web_null_peer import BASE_PATH, READY_PATH
from bench.results.samples import http_done
from bench.studies.pool import StudyPool

PEER_START_TIMEOUT = 60.0  # the peer prepares the pool first (cached by then: the harness prepared it)
TIMEOUT = 30.0


@contextmanager
def null_peer(profile: str, syntax: str | None):
    """A running bench.load.web_null_peer; yields (its DICOMweb base URL, its psutil process)."""
    port = free_local_port()
    command = [sys.executable, "-m", "bench.load.web_null_peer", "--port", str(port), "--profile", profile]
    command += ["--transfer-syntax", syntax] if syntax else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base + READY_PATH, process)
        yield base + BASE_PATH, psutil.Process(process.pid)
    finally:
        stop_process(process, 10.0)


def wait_until_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + PEER_START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise UserError(f"the null DICOMweb peer did not answer {url} within {PEER_START_TIMEOUT:g} s")


def client(url: str) -> tuple[HTTPClient, str]:
    """One keep-alive connection to `url`, and the base path requests go under."""
    base = URL(url)
    return HTTPClient.from_url(base, concurrency=1, connection_timeout=TIMEOUT, network_timeout=TIMEOUT), base.path


def stow_pool_copies(pool: StudyPool, url: str, instances: int) -> SendResult:
    """The stow users' path: whole pool studies (fresh copies) POSTed until `instances` were acknowledged."""
    http, base_path = client(url)
    result = SendResult()
    started = time.perf_counter()
    try:
        while result.instances + result.failures < instances:
            study = pool.next_study()
            body, content_type = stow_body(study)
            path = f"{base_path}/studies/{study[0].changes['StudyInstanceUID']}"
            answer = Answer(
                http.request("POST", path, body=body, headers={"Content-Type": content_type, "Accept": DICOM_JSON})
            )
            answer.body()
            answer.response.release()
            if http_done(answer.status):
                result.instances += len(study)
                result.frames += sum(i.frames for i in study)
                result.bytes += sum(i.size for i in study)
            else:
                result.failures += len(study)
    finally:
        http.close()
    result.seconds = time.perf_counter() - started
    return result


def wado_studies(url: str, instances: int) -> SendResult:
    """The wado users' path: whole studies retrieved (multipart, parsed as it streams in) until `instances` arrived."""
    http, base_path = client(url)
    result = SendResult()
    started = time.perf_counter()
    try:
        for number in range(instances):  # each answer holds at least one instance
            if result.instances + result.failures >= instances:
                break
            answer = Answer(http.request("GET", f"{base_path}/studies/1.2.3.{number}", headers={"Accept": WADO_ACCEPT}))
            if not http_done(answer.status):
                answer.body()
                result.failures += 1
            else:
                arrived = read_instances(answer.chunks(), answer.content_type, with_digest=False)
                result.instances += len(arrived)
                result.frames += sum(f.frames for f in arrived)
                result.bytes += sum(f.bytes for f in arrived)
            answer.response.release()
    finally:
        http.close()
    result.seconds = time.perf_counter() - started
    return result


def timed_with_peer_cpu(measure, peer: psutil.Process) -> dict:
    """A measurement's rates, with the share of a core the peer and the harness (this process) used meanwhile:
    the peer near 1, it and not the harness may have set the pace; both well under 1, the pace was the round
    trips' (one request at a time on one connection, as a user makes them)."""
    before, harness_before = peer.cpu_times(), time.process_time()
    result = measure()
    after, harness_busy = peer.cpu_times(), time.process_time() - harness_before
    if result.failures:
        raise UserError(f"calibration: {result.failures} DICOMweb requests to the null peer failed")
    busy = (after.user - before.user) + (after.system - before.system)
    seconds = max(result.seconds, 1e-9)
    return result.rates() | {
        "peer_cpu_share": round(busy / seconds, 2),
        "harness_cpu_share": round(harness_busy / seconds, 2),
    }


def calibrate_dicomweb(profile: str, syntax: str | None, pool: StudyPool, instances: int) -> dict:
    """Instances/s and MB/s of the stow users' STOW-RS and the wado users' WADO-RS against the null peer."""
    with null_peer(profile, syntax) as (url, peer):
        stow_pool_copies(pool, url, min(instances, 20))  # warm-up: connection, caches
        stow = timed_with_peer_cpu(lambda: stow_pool_copies(pool, url, instances), peer)
        wado_studies(url, min(instances, 20))
        wado = timed_with_peer_cpu(lambda: wado_studies(url, instances), peer)
    return {"stow": stow, "wado": wado, "peer": "bench.load.web_null_peer (http.server: reads and discards, serves)"}
