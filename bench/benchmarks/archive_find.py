"""C-FIND latency of the reference archive with a large index (default: 1 million instances).

The index is pre-filled once (cached) with 50,000 studies of 4 series x 5 instances, 2 studies
per patient, dates over five years; each run copies it into a fresh archive. One pynetdicom
association then sends study-level queries of the kinds a reading workstation sends (by
Patient ID, Accession Number, a day, a week of XA, a name prefix) and a C-ECHO round trip as
the client's own floor. The same queries also go through the harness's own upper layer
(bench.dicom.scu), which reads responses without pynetdicom's polling and does not decode them:
the time until the last response is in, which is what the archive is responsible for.

    python -m bench.benchmarks.archive_find [--instances 1000000] [--queries 200]

Goal (archive issue): study-level p95 <= 20 ms. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from bench.common.paths import cache_root
from bench.dicom.peer import Peer
from bench.dicom.scu import ServiceUser, query_proposals
from server_under_test.ready import wait_for_ready
from server_under_test.storage.index import SCHEMA, index_path

SURNAMES = [
    "SMITH",
    "MUELLER",
    "PAPADOPOULOS",
    "ROSSI",
    "NOWAK",
    "SILVA",
    "JANSEN",
    "KOVAC",
    "BERG",
    "LAINE",
    "GARCIA",
    "MARTIN",
    "DUBOIS",
    "NIELSEN",
    "HORVAT",
    "COSTA",
    "EVANS",
    "WAGNER",
    "NOVAK",
    "OLSEN",
]
GIVEN = ["ANNA", "BORIS", "CHLOE", "DIMITRIS", "ELENI", "FRANZ", "GEORGIA", "HUGO", "IRINI", "JONAS"]
READY_TIMEOUT = 120.0  # a million-row index is opened before the archive listens
SERIES_PER_STUDY, INSTANCES_PER_SERIES, STUDIES_PER_PATIENT = 4, 5, 2


def study_date(study: int) -> str:
    return (dt.date(2021, 1, 1) + dt.timedelta(days=study * 1826 // 50_000 % 1826)).strftime("%Y%m%d")


def prefill(path: Path, instances: int) -> None:
    """Write the index tables directly (the archive's own schema), counts included."""
    studies = max(1, instances // (SERIES_PER_STUDY * INSTANCES_PER_SERIES))
    temp = path.with_suffix(".partial")
    temp.unlink(missing_ok=True)
    db = sqlite3.connect(temp)
    db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
    patients = (studies + STUDIES_PER_PATIENT - 1) // STUDIES_PER_PATIENT
    per_patient = STUDIES_PER_PATIENT * SERIES_PER_STUDY * INSTANCES_PER_SERIES
    db.executemany(
        "INSERT INTO patient VALUES (?,?,?,?,?,?,?,?)",
        (
            (
                p + 1,
                f"PID{p:07d}",
                f"{SURNAMES[p % 20]}^{GIVEN[(p // 20) % 10]}{p:05d}",
                "19600101",
                "MF"[p % 2],
                STUDIES_PER_PATIENT,
                STUDIES_PER_PATIENT * SERIES_PER_STUDY,
                per_patient,
            )
            for p in range(patients)
        ),
    )
    db.executemany(
        "INSERT INTO study VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            (
                s + 1,
                f"1.2.826.0.1.3680043.9.7.{s}",
                s // STUDIES_PER_PATIENT + 1,
                study_date(s),
                "101500",
                f"ACC{s:08d}",
                str(s),
                "Cerebral angiography",
                "REF^ERRER",
                "XA",
                SERIES_PER_STUDY,
                SERIES_PER_STUDY * INSTANCES_PER_SERIES,
                0.0,
            )
            for s in range(studies)
        ),
    )
    db.executemany(
        "INSERT INTO series VALUES (?,?,?,?,?,?,?,?)",
        (
            (
                r + 1,
                f"1.2.826.0.1.3680043.9.8.{r}",
                r // SERIES_PER_STUDY + 1,
                "XA",
                str(r % SERIES_PER_STUDY + 1),
                "HEAD",
                "DSA run",
                INSTANCES_PER_SERIES,
            )
            for r in range(studies * SERIES_PER_STUDY)
        ),
    )
    total = studies * SERIES_PER_STUDY * INSTANCES_PER_SERIES
    db.executemany(
        "INSERT INTO instance VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            (
                i + 1,
                f"1.2.826.0.1.3680043.9.9.{i}",
                i // INSTANCES_PER_SERIES + 1,
                XRayAngiographicImageStorage,
                str(i % INSTANCES_PER_SERIES + 1),
                ExplicitVRLittleEndian,
                10,
                10_000_000,
                0,
                f"/nowhere/{i}.dcm",
                0.0,
            )
            for i in range(total)
        ),
    )
    db.execute("INSERT INTO tier_usage VALUES (0, ?, ?)", (total * 10_000_000, total))
    db.commit()
    db.execute("ANALYZE")
    db.close()
    temp.rename(path)


def prefilled_index(instances: int) -> Path:
    path = cache_root() / "find-bench" / f"index-{instances}.sqlite"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"pre-filling an index with {instances:,} instances (once, cached in {path.parent}) ...", flush=True)
        prefill(path, instances)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def queries(studies: int, rng: random.Random) -> dict[str, callable]:
    def base() -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientName = ""
        ds.StudyDate = ""
        ds.NumberOfStudyRelatedInstances = None
        ds.ModalitiesInStudy = ""
        return ds

    def by_patient_id():
        ds = base()
        ds.PatientID = f"PID{rng.randrange(studies // STUDIES_PER_PATIENT):07d}"
        return ds

    def by_accession():
        ds = base()
        ds.AccessionNumber = f"ACC{rng.randrange(studies):08d}"
        return ds

    def one_day():
        ds = base()
        ds.StudyDate = study_date(rng.randrange(studies))
        return ds

    def week_of_xa():
        ds = base()
        start = dt.datetime.strptime(study_date(rng.randrange(studies)), "%Y%m%d").date()
        ds.StudyDate = f"{start:%Y%m%d}-{start + dt.timedelta(days=6):%Y%m%d}"
        ds.ModalitiesInStudy = "XA"
        return ds

    def name_prefix():
        ds = base()
        p = rng.randrange(studies // STUDIES_PER_PATIENT)
        ds.PatientName = f"{SURNAMES[p % 20]}^{GIVEN[(p // 20) % 10]}{p:05d}"[:-1] + "*"
        return ds

    return {
        "PatientID": by_patient_id,
        "AccessionNumber": by_accession,
        "StudyDate (1 day)": one_day,
        "StudyDate (7 days) + XA": week_of_xa,
        "PatientName prefix*": name_prefix,
    }


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def find_histogram(metrics_url: str) -> dict[float, float]:
    """Cumulative C-FIND counts per latency bucket bound (seconds), from the archive's /metrics."""
    text = urllib.request.urlopen(f"{metrics_url}/metrics", timeout=30).read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith("pacsbench_archive_operation_seconds_bucket") and 'operation="C-FIND"' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(before: dict, after: dict, q: float) -> float:
    """The bucket bound (ms) below which a fraction q of the operations between the snapshots fell."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    for bound, count in zip(bounds, counts):
        if count >= q * total:
            return bound * 1000
    return float("inf")


def pynetdicom_client(port: int):
    """A pynetdicom association: (echo(), find(identifier) -> (status, matches), release())."""
    ae = AE(ae_title="FINDBENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBENCH")
    if not assoc.is_established or assoc.is_aborted:
        raise SystemExit("cannot associate with the archive")
    # pynetdicom leaves Nagle on: its request (command + identifier PDUs) would wait ~40 ms for an ACK.
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def find(identifier: Dataset) -> tuple[int, int]:
        responses = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
        return responses[-1][0].Status, len(responses) - 1

    return assoc.send_c_echo, find, assoc.release


def harness_client(port: int):
    """The harness's own upper layer (bench.dicom.scu): reads responses without polling, and counts
    the matches without decoding them."""
    user = ServiceUser(Peer("127.0.0.1", port, "PACSBENCH"), "FINDBENCH", query_proposals())
    user.connect()

    def find(identifier: Dataset) -> tuple[int, int]:
        status, matches = user.find(identifier, decode_matches=False)  # the archive's time, not pydicom's
        return status, len(matches)

    return user.echo, find, user.release


CLIENTS = {"pynetdicom": pynetdicom_client, "harness": harness_client}


def run_queries(metrics_url: str, port: int, kinds: dict, count: int) -> dict:
    """Each kind's queries go through both clients, alternating which goes first (so neither
    always meets the other's warmed-up pages); the server histogram covers both."""
    clients = {name: connect(port) for name, connect in CLIENTS.items()}
    results = {"C-ECHO (client floor)": {name: [] for name in clients}}
    for _ in range(count):
        for name, (echo, _, _) in clients.items():
            started = time.perf_counter()
            echo()
            results["C-ECHO (client floor)"][name].append((time.perf_counter() - started) * 1000)
    for kind, make in kinds.items():  # one kind at a time, so the server's histogram separates them
        before = find_histogram(metrics_url)
        times = {name: [] for name in clients}
        matches = 0
        for i in range(count):
            identifier = make()
            for name in list(clients) if i % 2 == 0 else list(reversed(clients)):
                started = time.perf_counter()
                status, found = clients[name][1](identifier)
                times[name].append((time.perf_counter() - started) * 1000)
                if status != 0:
                    raise SystemExit(f"{kind} ({name}): C-FIND ended with status 0x{status:04X}")
                matches += found
        after = find_histogram(metrics_url)
        results[kind] = {
            **times,
            "matches": matches / (count * len(clients)),
            "server_p50": histogram_quantile(before, after, 0.50),
            "server_p95": histogram_quantile(before, after, 0.95),
        }
    for _, _, release in clients.values():
        release()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000, help="instances in the index (default 1000000)")
    parser.add_argument("--queries", type=int, default=200, help="queries of each kind (default 200)")
    args = parser.parse_args(argv)
    source = prefilled_index(args.instances)
    work = Path(tempfile.mkdtemp(prefix="pacsbench-find-"))
    (work / "archive").mkdir()
    shutil.copy(source, index_path(work / "archive"))
    ready_file = work / "archive-ready.json"
    with open(work / "archive.log", "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server_under_test",
                "--port",
                "0",
                "--metrics-port",
                "0",
                "--data",
                str(work / "archive"),
                "--ready-file",
                str(ready_file),
            ],
            stdout=log,
            stderr=log,
        )
    try:
        ready = wait_for_ready(ready_file, server, READY_TIMEOUT)
        studies = max(1, args.instances // (SERIES_PER_STUDY * INSTANCES_PER_SERIES))
        results = run_queries(ready.metrics_url, ready.port, queries(studies, random.Random(5)), args.queries)
    finally:
        server.terminate()
        server.wait(60)
        log = (work / "archive.log").read_text()
        shutil.rmtree(work, ignore_errors=True)
        if server.returncode not in (0, -15) or sys.exc_info()[0] is not None:
            print(log[-3000:], file=sys.stderr)
    print(f"\nstudy-level C-FIND, {args.instances:,} instances indexed, {args.queries} queries per kind (ms)")
    print("clients: pynetdicom (TCP_NODELAY; its polling adds ~1-2 ms per response, and it decodes every match)")
    print("and the harness's own upper layer (responses received, not decoded), one association each, the same")
    print("queries; server: the archive's own histogram (request received -> last response sent), bucket bound")
    print(
        f"  {'query':26s} {'pynetdicom p50':>14s} {'p95':>7s} {'harness p50':>11s} {'p95':>7s} "
        f"{'server p50':>10s} {'p95':>6s} {'matches':>8s}"
    )
    for name, r in results.items():
        server_part = f"{r['server_p50']:10.1f} {r['server_p95']:6.1f} {r['matches']:8.1f}" if "matches" in r else ""
        print(
            f"  {name:26s} {percentile(r['pynetdicom'], 50):14.2f} {percentile(r['pynetdicom'], 95):7.2f} "
            f"{percentile(r['harness'], 50):11.2f} {percentile(r['harness'], 95):7.2f} {server_part}"
        )
    print("  goal: study-level p95 <= 20 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
