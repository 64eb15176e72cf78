"""DICOMweb against DIMSE on the reference archive: the same instances, the same archive, alternated.

Ingest: STOW-RS (one request per study, multipart/related) against C-STORE (the harness's own upper layer,
bench.dicom.scu), each from `--clients` parallel clients, each round on fresh copies (new UIDs) of the same
2 MB single-frame XA instances. Retrieve: WADO-RS of a whole study (the multipart body read to its end)
against C-GET of it, for each study just stored. Query: QIDO-RS against C-FIND, the study-level searches of
archive_find (by Patient ID, Accession Number, a day, a week of XA, a name prefix), one client each,
alternated query by query, on an index pre-filled with `--index-instances` rows (the 1M-instance figure).

    python -m bench.benchmarks.dicomweb_vs_dimse [--studies 4] [--per-study 10] [--clients 2] [--rounds 3]
                                                  [--index-instances 0] [--queries 100]

Goals (issue 23): STOW-RS >= 0.8 of C-STORE; WADO-RS study retrieve >= 0.8 of C-GET; QIDO-RS study search
p95 <= 20 ms at 1M instances (C-FIND's goal). Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import urllib3
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

from bench.benchmarks.archive_find import INSTANCES_PER_SERIES as FIND_INSTANCES_PER_SERIES
from bench.benchmarks.archive_find import SERIES_PER_STUDY, prefilled_index, queries
from bench.common.processes import free_local_port
from bench.dicom.peer import Peer
from bench.dicom.scu import ServiceUser, query_proposals, storage_proposals, study_identifier
from bench.runs.resources import tree_cpu_seconds
from bench.studies.pixels import RunShape, synthesize_run
from bench.studies.xa import RunKeys, StudyKeys, build_instance
from bench.targets.archive_process import NODELAY_ENVIRONMENT
from server_under_test.ready import wait_for_ready
from server_under_test.storage.index import index_path

CALLING_AE = "PACSBENCH-WEB"
READY_TIMEOUT = 120.0
BOUNDARY = "pacsbench-dicomweb-vs-dimse"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
READ_CHUNK = 1 << 20


class Instance:
    """One instance as both protocols send it: the PS3.10 file (STOW-RS) and the dataset after its meta."""

    def __init__(self, ds: Dataset):
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        self.file = buffer.getvalue()
        meta_end = 144 + int.from_bytes(self.file[140:144], "little")
        self.dataset = self.file[meta_end:]
        self.study_uid, self.sop_uid = ds.StudyInstanceUID, ds.SOPInstanceUID


def make_studies(pixels: np.ndarray, studies: int, per_study: int) -> list[list[Instance]]:
    """Fresh copies: `studies` studies of `per_study` 2 MB instances, new UIDs everywhere."""
    shape = RunShape(1024, 1024, 1, 12, mask_frames=0)
    out = []
    for s in range(studies):
        keys = StudyKeys("BENCH^WEB", f"WEB{s}", "19700101", "O", generate_uid(), "1", f"ACC{s}", "20260101", "120000")
        study = []
        for i in range(per_study):
            ds = build_instance(
                pixels, shape, keys, RunKeys(generate_uid(), generate_uid(), i + 1, "120000", 0.0, 0.0), 4.0, "HEAD"
            )
            del ds.MaskSubtractionSequence  # one frame: nothing to subtract
            study.append(Instance(ds))
        out.append(study)
    return out


def in_parallel(clients: int, work: list, run_one: Callable) -> float:
    """Seconds for `clients` threads to run `run_one(client_number, item)` over `work`, shared round-robin."""
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            for item in work[number::clients]:
                run_one(number, item)
        except BaseException as exc:  # reported after the others finish
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a client failed: {errors[0]}")
    return time.perf_counter() - started


class Clients:
    """Per client thread: an association (storage, C-FIND, C-GET) and an HTTP connection pool."""

    def __init__(self, port: int, base_url: str, count: int):
        proposals = storage_proposals([XRayAngiographicImageStorage], [ExplicitVRLittleEndian], scp_role=True)
        self.users = [
            ServiceUser(Peer("127.0.0.1", port, "PACSBENCH"), CALLING_AE, proposals + query_proposals())
            for _ in range(count)
        ]
        for user in self.users:
            user.connect()
        url = urlsplit(base_url)
        self.http = [urllib3.HTTPConnectionPool(url.hostname, url.port, maxsize=1) for _ in range(count)]
        self.base_path = url.path

    def c_store(self, number: int, study: list[Instance]) -> None:
        for instance in study:
            status = self.users[number].store(
                XRayAngiographicImageStorage, instance.sop_uid, ExplicitVRLittleEndian, [instance.dataset]
            )
            if status != 0:
                raise SystemExit(f"C-STORE answered 0x{status:04X}")

    def stow(self, number: int, study: list[Instance]) -> None:
        head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body = b"".join(head + i.file + b"\r\n" for i in study) + f"--{BOUNDARY}--\r\n".encode()
        answer = self.http[number].request(
            "POST", f"{self.base_path}/studies", body=body, headers={"Content-Type": STOW_TYPE}
        )
        if answer.status != 200:
            raise SystemExit(f"STOW-RS answered {answer.status}: {answer.data[:300]!r}")

    def c_get(self, number: int, study: list[Instance]) -> None:
        outcome = self.users[number].get(study_identifier(study[0].study_uid))
        if outcome.status != 0 or outcome.instances != len(study):
            raise SystemExit(f"C-GET: status 0x{outcome.status:04X}, {outcome.instances} of {len(study)} instances")

    def wado(self, number: int, study: list[Instance]) -> None:
        answer = self.http[number].request(
            "GET", f"{self.base_path}/studies/{study[0].study_uid}", preload_content=False
        )
        received = 0
        for chunk in answer.stream(READ_CHUNK):
            received += len(chunk)
        answer.release_conn()
        if answer.status != 200 or received < sum(len(i.file) for i in study):
            raise SystemExit(f"WADO-RS answered {answer.status} with {received} bytes")

    def c_find(self, identifier: Dataset) -> int:
        status, matches = self.users[0].find(identifier, decode_matches=False)
        if status != 0:
            raise SystemExit(f"C-FIND answered 0x{status:04X}")
        return len(matches)

    def qido(self, identifier: Dataset) -> int:
        params = [
            (e.keyword, str(e.value))
            for e in identifier
            if e.keyword != "QueryRetrieveLevel" and e.value not in (None, "")
        ]
        params += [
            ("includefield", e.keyword)
            for e in identifier
            if e.keyword != "QueryRetrieveLevel" and e.value in (None, "")
        ]
        answer = self.http[0].request(
            "GET", f"{self.base_path}/studies?{urlencode(params)}", headers={"Accept": "application/dicom+json"}
        )
        if answer.status not in (200, 204):
            raise SystemExit(f"QIDO-RS answered {answer.status}: {answer.data[:300]!r}")
        return answer.data.count(b'"0020000D"')

    def close(self) -> None:
        for user in self.users:
            user.release()


def start_archive(work: Path, index_instances: int) -> tuple[subprocess.Popen, int, str]:
    data = work / "archive"
    data.mkdir(parents=True)
    if index_instances:
        shutil.copy(prefilled_index(index_instances), index_path(data))
    ready_file = work / "ready.json"
    with open(work / "archive.log", "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server_under_test",
                "--port",
                "0",
                "--data",
                str(data),
                "--dicomweb-port",
                str(free_local_port()),
                "--ready-file",
                str(ready_file),
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, **NODELAY_ENVIRONMENT},
        )
    ready = wait_for_ready(ready_file, process, READY_TIMEOUT)
    return process, ready.port, ready.dicomweb_url


def ingest_and_retrieve(clients: Clients, pixels, args, archive_pid: int) -> tuple[dict, dict]:
    """Seconds per round of each operation, and the archive's CPU seconds for it; the order of the two
    protocols alternates round by round."""
    seconds: dict[str, list[float]] = {"C-STORE": [], "STOW-RS": [], "C-GET": [], "WADO-RS": []}
    cpu: dict[str, list[float]] = {name: [] for name in seconds}
    for round_number in range(args.rounds):
        by_dimse = make_studies(pixels, args.studies, args.per_study)
        by_web = make_studies(pixels, args.studies, args.per_study)
        ingest = [("C-STORE", clients.c_store, by_dimse), ("STOW-RS", clients.stow, by_web)]
        retrieve = [("C-GET", clients.c_get, by_dimse), ("WADO-RS", clients.wado, by_web)]
        for pair in (ingest, retrieve):
            for name, operation, studies in pair if round_number % 2 == 0 else reversed(pair):
                cpu_before = tree_cpu_seconds(archive_pid)
                seconds[name].append(in_parallel(args.clients, studies, operation))
                cpu[name].append(tree_cpu_seconds(archive_pid) - cpu_before)
    return seconds, cpu


def query_latencies(clients: Clients, args) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per query of each kind, C-FIND and QIDO-RS alternating which goes first."""
    studies = max(1, args.index_instances // (SERIES_PER_STUDY * FIND_INSTANCES_PER_SERIES))
    if not args.index_instances:
        return {}
    kinds = queries(studies, random.Random(5))
    out = {}
    for kind, make in kinds.items():
        times: dict[str, list[float]] = {"C-FIND": [], "QIDO-RS": []}
        for i in range(args.queries):
            identifier = make()
            pair = [("C-FIND", clients.c_find), ("QIDO-RS", clients.qido)]
            counts = []
            for name, ask in pair if i % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                counts.append(ask(identifier))
                times[name].append((time.perf_counter() - started) * 1000)
            if counts[0] != counts[1]:
                raise SystemExit(f"{kind}: C-FIND found {counts[0]}, QIDO-RS {counts[1]}")
        out[kind] = times
    return out


def report(seconds: dict[str, list[float]], cpu: dict, latencies: dict, args, instance_bytes: int) -> None:
    instances = args.studies * args.per_study
    rates = {name: instances / statistics.median(values) for name, values in seconds.items()}
    cpu_ms = {name: statistics.median(values) * 1000 / instances for name, values in cpu.items()}
    print(
        f"\n{args.studies} studies x {args.per_study} instances of {instance_bytes / 1e6:.1f} MB, "
        f"{args.clients} clients, {args.rounds} rounds (median)"
    )
    for name, rate in rates.items():
        print(
            f"  {name:8s} {rate:8.1f} instances/s {rate * instance_bytes / 1e6:8.1f} MB/s "
            f"{cpu_ms[name]:6.1f} ms of archive CPU per instance"
        )
    print(f"  STOW-RS / C-STORE = {rates['STOW-RS'] / rates['C-STORE']:.2f}x (goal >= 0.8)")
    print(f"  WADO-RS / C-GET   = {rates['WADO-RS'] / rates['C-GET']:.2f}x (goal >= 0.8)")
    if latencies:
        print(f"\nstudy-level queries, {args.index_instances:,} instances pre-filled, {args.queries} of each kind (ms)")
        print(f"  {'query':26s} {'C-FIND p50':>10s} {'p95':>7s} {'QIDO-RS p50':>11s} {'p95':>7s} {'p95 ratio':>9s}")
        for kind, times in latencies.items():
            find95, qido95 = np.percentile(times["C-FIND"], 95), np.percentile(times["QIDO-RS"], 95)
            print(
                f"  {kind:26s} {np.percentile(times['C-FIND'], 50):10.2f} {find95:7.2f} "
                f"{np.percentile(times['QIDO-RS'], 50):11.2f} {qido95:7.2f} {qido95 / find95:8.2f}x"
            )
        print("  goal: QIDO-RS study-level p95 <= 20 ms (C-FIND's goal)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=4, help="studies per protocol and round (default 4)")
    parser.add_argument("--per-study", type=int, default=10, help="2 MB instances per study (default 10)")
    parser.add_argument("--clients", type=int, default=2, help="parallel clients per protocol (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, alternating which protocol goes first (default 3)"
    )
    parser.add_argument(
        "--index-instances",
        type=int,
        default=20_000,
        help="pre-fill the index with this many instances, as archive_find does (cached; default 20000; "
        "1000000 for the goal's figure)",
    )
    parser.add_argument(
        "--queries", type=int, default=100, help="queries of each kind (default 100; 0 = no query part)"
    )
    args = parser.parse_args(argv)
    for name in ("studies", "per_study", "clients", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    pixels = synthesize_run(RunShape(1024, 1024, 1, 12, mask_frames=0), seed=7)
    work = Path(tempfile.mkdtemp(prefix="pacsbench-dicomweb-"))
    process = None
    try:
        process, port, url = start_archive(work, args.index_instances)
        clients = Clients(port, url, args.clients)
        try:
            seconds, cpu = ingest_and_retrieve(clients, pixels, args, process.pid)
            latencies = query_latencies(clients, args) if args.queries else {}
        finally:
            clients.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait(60)
        log = (work / "archive.log").read_text() if (work / "archive.log").exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        if sys.exc_info()[0] is not None:
            print(log[-3000:], file=sys.stderr)
    instance_bytes = len(make_studies(pixels, 1, 1)[0][0].file)
    report(seconds, cpu, latencies, args, instance_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
