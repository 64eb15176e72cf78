"""DICOMweb against DIMSE on the reference archive (and on Orthanc): the same instances, alternated.

Ingest: STOW-RS (one request per study, multipart/related, the body built before it is timed) against C-STORE
(the harness's own upper layer, bench.dicom.scu), each from `--clients` parallel clients flat out, each round
on fresh copies (new UIDs): by default 2 MB single-frame XA instances; with --profile NAME, copies of a study
profile's instances from the study pool (`--profile ct`: 0.5 MB CT slices), as archive_ingest does. Retrieve:
WADO-RS of a whole study (the multipart body read to its end) against C-GET of it, for each study just stored.
With --orthanc, Orthanc with its DICOMweb plugin (the harness's orthanc target, dicomweb = true, fsync on like
the archive) is a second archive in the same rounds: every round runs each archive and protocol once, in an
order rotated round by round, and the ratios are ours/Orthanc per protocol. Query (our archive only): QIDO-RS
against C-FIND, the study-level searches of archive_find (by Patient ID, Accession Number, a day, a week of
XA, a name prefix), one client each, alternated query by query, on an index pre-filled with
`--index-instances` rows (the 1M-instance figure).

    python -m bench.benchmarks.dicomweb_vs_dimse [--studies 4] [--per-study 10] [--clients 2] [--rounds 3]
        [--profile ct] [--orthanc] [--index-instances 0] [--queries 100]

Goals (issue 23): STOW-RS >= 0.8 of C-STORE and >= 2x Orthanc's STOW-RS; WADO-RS study retrieve >= 0.8 of
C-GET; QIDO-RS study search p95 <= 20 ms at 1M instances (C-FIND's goal). Rates are medians over rounds,
with the range; ratios are taken within each round (the same load on both sides), median and range. Not a
test: the figures depend on the machine.
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
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import urllib3
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

from bench.benchmarks.archive_find import INSTANCES_PER_SERIES as FIND_INSTANCES_PER_SERIES
from bench.benchmarks.archive_find import SERIES_PER_STUDY, prefilled_index, queries
from bench.benchmarks.archive_ingest import Instances as IngestInstances
from bench.benchmarks.file_creation import add_settle_argument, settle
from bench.common.errors import UserError
from bench.common.processes import free_local_port
from bench.dicom.peer import Peer
from bench.dicom.scu import ServiceUser, query_proposals, storage_proposals, study_identifier
from bench.runs.resources import tree_cpu_seconds
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import OrthancSpec
from bench.studies.pixels import RunShape, synthesize_run
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from bench.studies.xa import RunKeys, StudyKeys, build_instance
from bench.targets import make_target
from bench.targets.archive_process import NODELAY_ENVIRONMENT
from bench.targets.target import Target
from server_under_test.ready import wait_for_ready
from server_under_test.storage.index import index_path

CALLING_AE = "PACSBENCH-WEB"
READY_TIMEOUT = 120.0
BOUNDARY = "pacsbench-dicomweb-vs-dimse"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
PART_HEAD = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
READ_CHUNK = 1 << 20
OURS, ORTHANC = "archive", "Orthanc"


@dataclass
class Instance:
    """One instance as C-STORE sends it: its data set (a view into its study's STOW-RS body) and its identity."""

    sop_class: str
    sop_uid: str
    transfer_syntax: str
    dataset: memoryview


@dataclass
class Study:
    """One study as both protocols send it: the STOW-RS body (built before it is timed) and its instances."""

    study_uid: str
    body: bytes
    instances: list[Instance]

    @classmethod
    def of_files(cls, study_uid: str, files: list[tuple[str, str, str, bytes]]) -> Study:
        """From (SOP class, SOP instance, transfer syntax, PS3.10 file) of each instance."""
        body = b"".join(PART_HEAD + f[3] + b"\r\n" for f in files) + f"--{BOUNDARY}--\r\n".encode()
        view, instances, at = memoryview(body), [], 0
        for sop_class, sop_uid, syntax, file in files:
            at += len(PART_HEAD)
            meta_end = 144 + int.from_bytes(file[140:144], "little")
            instances.append(Instance(sop_class, sop_uid, syntax, view[at + meta_end : at + len(file)]))
            at += len(file) + 2
        return cls(study_uid, body, instances)

    @property
    def dataset_bytes(self) -> int:
        return sum(len(i.dataset) for i in self.instances)


class Source:
    """Fresh study copies for each round: the built-in 2 MB XA instance, or a study profile's pool (the pool
    archive_ingest --profile uses, so one cache serves both)."""

    def __init__(self, profile: str | None):
        self.profile = profile
        if profile is None:
            self.pixels = synthesize_run(RunShape(1024, 1024, 1, 12, mask_frames=0), seed=7)
            self.sop_classes, self.syntaxes = [XRayAngiographicImageStorage], [ExplicitVRLittleEndian]
            return
        try:
            self.pool = StudyPool.prepare(
                load_profile(profile), IngestInstances.POOL_STUDIES, IngestInstances.POOL_SEED, progress=False
            )
        except UserError as exc:
            raise SystemExit(str(exc)) from None
        self.sop_classes, self.syntaxes = self.pool.sop_classes, self.pool.transfer_syntaxes

    def studies(self, studies: int, per_study: int) -> list[Study]:
        return [
            self._xa_study(per_study) if self.profile is None else self._pool_study(per_study) for _ in range(studies)
        ]

    def _xa_study(self, per_study: int) -> Study:
        shape = RunShape(1024, 1024, 1, 12, mask_frames=0)
        keys = StudyKeys("BENCH^WEB", "WEB1", "19700101", "O", generate_uid(), "1", "ACC1", "20260101", "120000")
        files = []
        for i in range(per_study):
            run = RunKeys(generate_uid(), generate_uid(), i + 1, "120000", 0.0, 0.0)
            ds = build_instance(self.pixels, shape, keys, run, 4.0, "HEAD")
            del ds.MaskSubtractionSequence  # one frame: nothing to subtract
            buffer = BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            files.append((ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian, buffer.getvalue()))
        return Study.of_files(keys.study_uid, files)

    def _pool_study(self, per_study: int) -> Study:
        """The first `per_study` instances of the pool's next study, copied with new UIDs."""
        copies = self.pool.next_study()[:per_study]
        files = [
            (c.sop_class_uid, c.sop_instance_uid, c.transfer_syntax_uid, b"".join(c.part10_chunks())) for c in copies
        ]
        return Study.of_files(copies[0].changes["StudyInstanceUID"], files)


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
    """Per client thread, for one archive: an association (storage, C-FIND, C-GET) and an HTTP connection pool."""

    def __init__(self, peer: Peer, base_url: str, count: int, source: Source):
        proposals = storage_proposals(source.sop_classes, source.syntaxes, scp_role=True)
        self.users = [ServiceUser(peer, CALLING_AE, proposals + query_proposals()) for _ in range(count)]
        for user in self.users:
            user.connect()
        url = urlsplit(base_url)
        # One retry on a fresh connection: an archive closes a keep-alive connection left idle for its timeout
        # (30 s for ours) while the other archive is measured, and a request sent on it meets a closed socket.
        retry = urllib3.Retry(total=1, allowed_methods=None, status=0, redirect=0)
        self.http = [urllib3.HTTPConnectionPool(url.hostname, url.port, maxsize=1, retries=retry) for _ in range(count)]
        self.base_path = url.path

    def c_store(self, number: int, study: Study) -> None:
        for instance in study.instances:
            status = self.users[number].store(
                instance.sop_class, instance.sop_uid, instance.transfer_syntax, [instance.dataset]
            )
            if status != 0:
                raise SystemExit(f"C-STORE answered 0x{status:04X}")

    def stow(self, number: int, study: Study) -> None:
        answer = self.http[number].request(
            "POST", f"{self.base_path}/studies", body=study.body, headers={"Content-Type": STOW_TYPE}
        )
        if answer.status != 200:
            raise SystemExit(f"STOW-RS answered {answer.status}: {answer.data[:300]!r}")

    def c_get(self, number: int, study: Study) -> None:
        outcome = self.users[number].get(study_identifier(study.study_uid))
        if outcome.status != 0 or outcome.instances != len(study.instances):
            raise SystemExit(
                f"C-GET: status 0x{outcome.status:04X}, {outcome.instances} of {len(study.instances)} instances"
            )

    def wado(self, number: int, study: Study) -> None:
        answer = self.http[number].request("GET", f"{self.base_path}/studies/{study.study_uid}", preload_content=False)
        received = 0
        for chunk in answer.stream(READ_CHUNK):
            received += len(chunk)
        answer.release_conn()
        if answer.status != 200 or received < study.dataset_bytes:
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


@dataclass
class Archive:
    """One archive under test: its name, its clients, the root of its process tree (for its CPU)."""

    name: str
    clients: Clients
    pid: int


def start_orthanc(work: Path) -> Target:
    """Orthanc with its DICOMweb plugin, as the harness's orthanc target starts it: SyncStorageArea on (fsync, like
    the archive), its largest PDU (128 KiB), both CPUs and room enough that its memory limit never binds."""
    spec = OrthancSpec(dicomweb=True, ae_title="ORTHANC", cpus=os.cpu_count() or 1, memory_mib=16384)
    target = make_target(spec, ClientSpec(calling_ae=CALLING_AE))
    try:
        target.start(work)
    except UserError as exc:
        target.stop()
        raise SystemExit(str(exc)) from None
    return target


INGEST = {"C-STORE": Clients.c_store, "STOW-RS": Clients.stow}
RETRIEVE = {"C-GET": Clients.c_get, "WADO-RS": Clients.wado}
RETRIEVES = {"C-GET": "C-STORE", "WADO-RS": "STOW-RS"}  # what each retrieves: the studies that one stored


@dataclass
class Timing:
    seconds: float
    cpu: float  # the archive's CPU seconds meanwhile
    instances: int


def ingest_and_retrieve(archives: list[Archive], source: Source, args) -> dict[tuple[str, str], list[Timing]]:
    """Per archive and operation, its timing in each round. Each round stores fresh copies with every archive and
    protocol, then retrieves each stored study by the other protocol of its kind; the order of the archive and
    protocol pairs rotates round by round."""
    timings: dict[tuple[str, str], list[Timing]] = {}
    for round_number in range(args.rounds):
        stored: dict[tuple[str, str], list[Study]] = {}
        for phase in (INGEST, RETRIEVE):
            pairs = [(archive, name) for archive in archives for name in phase]
            turn = round_number % len(pairs)
            for archive, name in pairs[turn:] + pairs[:turn]:
                if phase is INGEST:
                    studies = stored[archive.name, name] = source.studies(args.studies, args.per_study)
                else:
                    studies = stored[archive.name, RETRIEVES[name]]
                operation = partial(phase[name], archive.clients)
                cpu_before = tree_cpu_seconds(archive.pid)
                seconds = in_parallel(args.clients, studies, operation)
                cpu = tree_cpu_seconds(archive.pid) - cpu_before
                instances = sum(len(s.instances) for s in studies)
                timings.setdefault((archive.name, name), []).append(Timing(seconds, cpu, instances))
    return timings


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


def rates(timings: list[Timing]) -> list[float]:
    return [t.instances / t.seconds for t in timings]


def spread(values: list[float], unit: str = "", digits: int = 1) -> str:
    """Median, and the range over rounds."""
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def ratio_line(label: str, timings: dict, a: tuple[str, str], b: tuple[str, str], goal: str) -> str:
    """a's rate over b's, round by round (both ran in the same round): median and range."""
    per_round = [x / y for x, y in zip(rates(timings[a]), rates(timings[b]))]
    return f"  {label:34s} {spread(per_round, 'x', 2):26s} {goal}"


def report(timings: dict, latencies: dict, args, source: Source, mean_bytes: float, pdu: str) -> None:
    profile = f"--profile {args.profile}" if args.profile else "2 MB XA"
    print(
        f"\n{args.studies} studies x {args.per_study} instances ({profile}, {mean_bytes / 1e6:.2f} MB each), "
        f"{args.clients} clients flat out, {args.rounds} rounds: median (range over rounds)"
    )
    print(f"  fsync on for every archive; {pdu}")
    for (archive, name), values in timings.items():
        cpu = [t.cpu * 1000 / t.instances for t in values]
        print(
            f"  {archive:8s} {name:8s} {spread(rates(values), ' inst/s'):30s} "
            f"{statistics.median(rates(values)) * mean_bytes / 1e6:7.1f} MB/s  "
            f"{spread(cpu, ' ms', 2)} archive CPU per instance"
        )
    print(ratio_line("archive STOW-RS / C-STORE", timings, (OURS, "STOW-RS"), (OURS, "C-STORE"), "goal >= 0.8"))
    print(ratio_line("archive WADO-RS / C-GET", timings, (OURS, "WADO-RS"), (OURS, "C-GET"), "goal >= 0.8"))
    if (ORTHANC, "STOW-RS") in timings:
        print(ratio_line("STOW-RS archive / Orthanc", timings, (OURS, "STOW-RS"), (ORTHANC, "STOW-RS"), "goal >= 2"))
        for name in ("C-STORE", "WADO-RS", "C-GET"):
            print(ratio_line(f"{name} archive / Orthanc", timings, (OURS, name), (ORTHANC, name), "(reference)"))
        print(ratio_line("Orthanc STOW-RS / C-STORE", timings, (ORTHANC, "STOW-RS"), (ORTHANC, "C-STORE"), ""))
        print(ratio_line("Orthanc WADO-RS / C-GET", timings, (ORTHANC, "WADO-RS"), (ORTHANC, "C-GET"), ""))
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
    parser.add_argument("--studies", type=int, default=4, help="studies per archive, protocol and round (default 4)")
    parser.add_argument("--per-study", type=int, default=10, help="instances per study (default 10)")
    parser.add_argument("--clients", type=int, default=2, help="parallel clients per protocol (default 2)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds, rotating which archive and protocol goes first (default 3)"
    )
    parser.add_argument(
        "--profile",
        help="a study profile whose instances are sent instead of the 2 MB XA instance (a name from "
        "bench/studies/profiles, e.g. ct: 0.5 MB slices; copies from the study pool with new UIDs)",
    )
    parser.add_argument(
        "--orthanc",
        action="store_true",
        help="also measure Orthanc with its DICOMweb plugin (Debian orthanc, orthanc-dicomweb) in the same rounds",
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
    add_settle_argument(parser)
    args = parser.parse_args(argv)
    for name in ("studies", "per_study", "clients", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    source = Source(args.profile)
    work = Path(tempfile.mkdtemp(prefix="pacsbench-dicomweb-"))
    process, orthanc, archives = None, None, []
    try:
        settle(work, args.settle)
        process, port, url = start_archive(work, args.index_instances)
        archives.append(
            Archive(OURS, Clients(Peer("127.0.0.1", port, "PACSBENCH"), url, args.clients, source), process.pid)
        )
        if args.orthanc:
            orthanc = start_orthanc(work / "orthanc")
            clients = Clients(orthanc.peer, orthanc.peer.dicomweb_url, args.clients, source)
            archives.append(Archive(ORTHANC, clients, orthanc.server_pid()))
        timings = ingest_and_retrieve(archives, source, args)
        latencies = query_latencies(archives[0].clients, args) if args.queries else {}
    finally:
        for archive in archives:
            archive.clients.close()
        if orthanc is not None:
            orthanc.stop()
        if process is not None:
            process.terminate()
            process.wait(60)
        log = (work / "archive.log").read_text() if (work / "archive.log").exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        if sys.exc_info()[0] is not None:
            print(log[-3000:], file=sys.stderr)
    sample = source.studies(1, args.per_study)[0]
    pdu = "PDUs: the archive 1 MiB, Orthanc 128 KiB (its largest)" if args.orthanc else "PDUs: 1 MiB"
    report(timings, latencies, args, source, sample.dataset_bytes / len(sample.instances), pdu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
