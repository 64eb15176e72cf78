"""Ingest benchmark: the reference archive vs Orthanc vs DCMTK storescp vs plain fsync writers.

Every target receives the same instances from 4 DCMTK storescu processes at once (one
association each, TCP_NODELAY=1): by default 2 MB XA instances (1024x1024, 16-bit, one
frame); with --profile NAME, fresh copies of a study profile's instances from the study pool
(bench/studies: `--profile ct` for 0.5 MB CT images, `--profile dsa-unit` for multi-frame
XA). The physical limit is 4 threads writing the same files with write + fsync + rename +
folder fsync and no network, measured two ways: through the page cache, and with O_DIRECT
(as the archive writes by default); the faster of the two is the limit. Targets alternate
within each round (in rotated order) and every round uses fresh UIDs. A last target,
storescp --ignore (receives, stores nothing), shows what the clients and the network can
deliver at all. --compare-tree DIR adds the reference archive as found in another source
tree (a checkout of an earlier commit, say): before and after a change, in the same run.

    python -m bench.benchmarks.archive_ingest [--profile ct] [--instances 400] [--rounds 3]
        [--page-cache-archive] [--compare-tree /tmp/archive-before] [--archives-only] [--settle 360]

Nothing is deleted on the work disk until the run ends: the input files are written to tmpfs (/dev/shm,
when it has room), and the writers' and storescp's files are kept like the archives' (the free space check
counts them). On ext4 without a journal, every file deleted makes each file created in the next minutes
dearer (bench/benchmarks/file_creation.py): deleting a round's scratch files charged the next targets up to
~1 ms of CPU per instance. The run waits (--settle) until creating a file is cheap, and prints what it cost
in each round.

Rounds are long enough to measure sustained ingest: starting 4 storescu processes and
negotiating their associations costs about 0.1 s per round whatever the target, which is a
quarter of a 100-instance round into a fast archive. Before each target runs, the disk is
settled (sync): dirty pages left by writing the round's input files or by a target that
does not fsync (storescp) would otherwise be written back on the next target's time.

Prints instances/s per target and round, the medians, the CPU each server and its clients
used per instance (from psutil: why one target is faster than another on a shared machine),
and the ratios the archive issues ask for (goals: >= 2x Orthanc, >= 0.6 of the plain writers).
Not a test: figures depend on the machine and its neighbours, which is why everything is
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from bench.benchmarks.file_creation import add_settle_argument, creation_cost, input_folder, settle
from bench.common.errors import UserError
from bench.common.processes import free_local_port
from bench.dicom.peer import Peer
from bench.dicom.readiness import NoEchoAnswer
from bench.load.calibrate import write_files
from bench.runs.disk import free_bytes, gb
from bench.runs.resources import tree_cpu_seconds
from bench.scenario.targets import OrthancSpec
from bench.studies.pixels import RunShape, synthesize_run
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from bench.studies.xa import RunKeys, StudyKeys, build_instance
from bench.targets.archive_process import NODELAY_ENVIRONMENT, ArchiveProcess
from bench.targets.installed import orthanc_config
from bench.targets.vm.tools import require

NODELAY = {**os.environ, **NODELAY_ENVIRONMENT}
STORESCU, STORESCP = "/usr/bin/storescu", "/usr/bin/storescp"
CALLING_AE = "PACSBENCH-INGEST"
START_TIMEOUT, STOP_GRACE = 60.0, 60.0


def write_round(folder: Path, count: int, pixels: np.ndarray) -> list[Path]:
    """`count` single-frame 2 MB XA files with fresh UIDs (one study per round)."""
    folder.mkdir(parents=True)
    shape = RunShape(1024, 1024, 1, 12, mask_frames=0)
    study = StudyKeys("BENCH^INGEST", "BENCH1", "19700101", "O", generate_uid(), "1", "ACC1", "20260101", "120000")
    paths = []
    for i in range(count):
        run = RunKeys(generate_uid(), generate_uid(), i + 1, "120000", 0.0, 0.0)
        ds = build_instance(pixels, shape, study, run, 4.0, "HEAD")
        del ds.MaskSubtractionSequence  # one frame: nothing to subtract
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


INSTANCE_MB = 2.1  # the built-in XA instance: 1024 x 1024 x 2 bytes plus header


class Instances:
    """Where each round's files come from: the built-in 2 MB XA instance, or a profile's study pool."""

    POOL_STUDIES, POOL_SEED = 2, 1  # copies of two pool studies, round robin, each with fresh UIDs

    def __init__(self, profile: str | None):
        self.profile = profile
        if profile is None:
            self.label = "2 MB XA"
            self.pixels = synthesize_run(RunShape(1024, 1024, 1, 12, mask_frames=0), seed=7)
            self.mean_bytes = INSTANCE_MB * 1e6
            return
        try:
            self.pool = StudyPool.prepare(load_profile(profile), self.POOL_STUDIES, self.POOL_SEED, progress=False)
        except UserError as exc:
            raise SystemExit(str(exc)) from None
        described = self.pool.describe()
        self.mean_bytes = described["bytes"] / max(described["instances"], 1)
        self.label = f"{self.mean_bytes / 1e6:.2g} MB {profile}"

    def write(self, folder: Path, count: int) -> list[Path]:
        """`count` files with fresh UIDs in `folder` (made here)."""
        if self.profile is None:
            return write_round(folder, count, self.pixels)
        folder.mkdir(parents=True)
        return write_files(self.pool, count, folder)


def clients_cpu() -> float:
    """CPU seconds of this process's reaped children (the storescu clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def storescu_parallel(files: list[Path], port: int, ae_title: str, associations: int) -> float:
    """Seconds for `associations` storescu processes to store all files; fails loudly on error."""
    groups = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [STORESCU, "-aec", ae_title, "127.0.0.1", str(port), *map(str, g)],
            env=NODELAY,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for g in groups
    ]
    errors = [p.communicate()[1] for p in processes]
    seconds = time.perf_counter() - started
    for p, err in zip(processes, errors):
        if p.returncode != 0:
            raise SystemExit(f"storescu into {ae_title} failed: {err.decode(errors='replace').strip()}")
    return seconds


def _write_buffered(path: Path, blob: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_direct(path: Path, blob: bytes, staging: mmap.mmap) -> None:
    """O_DIRECT needs an aligned buffer and length: copy, pad to 4 KB, cut back to size."""
    padded = -(-len(blob) // 4096) * 4096
    staging[: len(blob)] = blob
    staging[len(blob) : padded] = bytes(padded - len(blob))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    try:
        os.write(fd, memoryview(staging)[:padded])
        os.ftruncate(fd, len(blob))
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_writers(files: list[Path], out: Path, writers: int, direct: bool = False) -> float:
    """The disk's limit for this workload: write + fsync + rename + folder fsync, no network."""
    out.mkdir(parents=True)
    blobs = [f.read_bytes() for f in files]

    def write(part: list[bytes]) -> None:
        staging = mmap.mmap(-1, -(-max(map(len, blobs)) // 4096) * 4096) if direct else None
        for blob in part:
            final = out / f"{uuid.uuid4().hex}.dcm"
            temp = final.with_suffix(".tmp")
            if direct:
                _write_direct(temp, blob, staging)
            else:
                _write_buffered(temp, blob)
            os.rename(temp, final)
            dir_fd = os.open(out, os.O_RDONLY)
            os.fsync(dir_fd)
            os.close(dir_fd)

    threads = [threading.Thread(target=write, args=(blobs[i::writers],)) for i in range(writers)]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    return time.perf_counter() - started


class Server:
    """A DICOM server process started for the benchmark (its log in the work folder) and stopped at the end."""

    def __init__(self, name: str, ae_title: str, port: int, command: list[str], cwd: Path):
        self.name, self.ae_title, self.port = name, ae_title, port
        self.archive = ArchiveProcess(command, Peer("127.0.0.1", port, ae_title), cwd / f"{name}.log", cwd)
        try:
            self.archive.start(CALLING_AE, START_TIMEOUT)
        except NoEchoAnswer as exc:
            raise SystemExit(
                f"no C-ECHO answer from {ae_title} on port {port} within {START_TIMEOUT:g} s: {exc.reason}"
            ) from None
        self.process = self.archive.process

    def stop(self) -> None:
        self.archive.stop(STOP_GRACE)


def start_reference_archive(work: Path, page_cache: bool = False, tree: Path | None = None) -> Server:
    """The reference archive with default settings; `tree`: as found in another source tree (first on PYTHONPATH)."""
    port = free_local_port()
    name = "archive-page-cache" if page_cache else "reference-archive"
    command = [sys.executable, "-m", "server_under_test"]
    if tree is not None:
        name = f"archive-{tree.name}"
        command = [shutil.which("env") or "/usr/bin/env", f"PYTHONPATH={tree}", *command]
    return Server(
        name,
        "PACSBENCH",
        port,
        [
            *command,
            "--port",
            str(port),
            "--data",
            str(work / name),
            *(["--no-direct-io"] if page_cache else []),
        ],
        cwd=work,
    )


ORTHANC_DEFAULT_PDU = 16384


def start_orthanc(work: Path) -> Server:
    try:
        orthanc = require("Orthanc")
    except UserError as exc:
        raise SystemExit(str(exc)) from None
    port, http = free_local_port(), free_local_port()
    # The orthanc target's configuration, with one DICOM thread per storescu association. Its
    # maximum PDU stays Orthanc 1.10's default (16 KiB), as this benchmark has always measured it:
    # the figures stay comparable with earlier runs (the archive receives 1 MiB PDUs by default).
    spec = OrthancSpec(ae_title="ORTHANC", max_pdu=ORTHANC_DEFAULT_PDU)
    config = {**orthanc_config(work / "orthanc", spec, port, http, destinations={}), "DicomThreadsCount": 4}
    (work / "orthanc.json").write_text(json.dumps(config))
    return Server("orthanc", "ORTHANC", port, [orthanc, str(work / "orthanc.json")], cwd=work)


def start_clients_ceiling(work: Path) -> Server:
    """storescp --ignore: receives every dataset and answers success without storing it, so its
    rate is what the storescu clients and the network can deliver on this machine."""
    port = free_local_port()
    return Server(
        "clients-ceiling", "IGNORE", port, [STORESCP, "--fork", "--ignore", "-aet", "IGNORE", str(port)], cwd=work
    )


def start_storescp(work: Path) -> Server:
    port = free_local_port()
    (work / "storescp").mkdir()
    return Server(
        "storescp",
        "STORESCP",
        port,
        [STORESCP, "--fork", "-aet", "STORESCP", "-od", str(work / "storescp"), str(port)],
        cwd=work,
    )


def check_free_space(work: Path, instances: int, rounds: int, keeping_targets: int, mean_bytes: float) -> None:
    """Fail before starting if the disk cannot hold the run: every target's files are kept until the end
    (the archives' as archives do, storescp's and the writers' so that deleting them does not slow the next
    target's file creation), and a round's input when tmpfs has no room for it."""
    needed = instances * mean_bytes * (rounds * keeping_targets + 2)
    free = free_bytes(work)  # (--work may name a folder still to be made)
    if free < needed:
        raise SystemExit(
            f"{work}: {instances} instances x {rounds} rounds need about {gb(needed)} free, "
            f"the file system has {gb(free)} (use --work elsewhere, or fewer --rounds or --instances)"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        help="study profile whose instances every target receives (a name from bench/studies/profiles, "
        "e.g. ct or dsa-unit, or a .toml path); default: single-frame 2 MB XA instances",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=400,
        help="instances per target and round, split over the associations (default 400)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds; targets alternate within each (default 3)")
    parser.add_argument("--associations", type=int, default=4, help="parallel storescu processes (default 4)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary folder, removed)")
    add_settle_argument(parser)
    parser.add_argument(
        "--page-cache-archive",
        action="store_true",
        help="also run the archive with --no-direct-io (writes through the page cache)",
    )
    parser.add_argument(
        "--compare-tree",
        type=Path,
        metavar="DIR",
        help="also run the reference archive from this source tree (e.g. a worktree of an earlier commit), "
        "to compare two versions in one run",
    )
    parser.add_argument(
        "--archives-only",
        action="store_true",
        help="run only the reference archive (and --compare-tree's, --page-cache-archive's): no Orthanc, storescp "
        "or plain writers, so no goal ratios; for comparing two versions of the archive quickly",
    )
    args = parser.parse_args(argv)
    if args.instances < args.associations or args.rounds < 1:
        parser.error("need --instances >= --associations and --rounds >= 1")
    if args.compare_tree is not None and not (args.compare_tree / "server_under_test" / "__main__.py").is_file():
        parser.error(f"--compare-tree {args.compare_tree}: no server_under_test package there")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in (STORESCU, STORESCP):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} is missing (apt-get install dcmtk)")
    source = Instances(args.profile)
    # archives kept; without --archives-only also Orthanc, storescp and the two writers
    keeping = 1 + 4 * (not args.archives_only) + bool(args.page_cache_archive) + bool(args.compare_tree)
    check_free_space(args.work or Path(tempfile.gettempdir()), args.instances, args.rounds, keeping, source.mean_bytes)
    work = args.work or Path(tempfile.mkdtemp(prefix="pacsbench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    inputs = input_folder(args.instances * source.mean_bytes)
    servers = []
    try:
        servers.append(start_reference_archive(work))
        if not args.archives_only:
            servers += [start_orthanc(work), start_storescp(work), start_clients_ceiling(work)]
        if args.page_cache_archive:
            servers.append(start_reference_archive(work, page_cache=True))
        if args.compare_tree:
            servers.append(start_reference_archive(work, tree=args.compare_tree.resolve()))
        settle(work, args.settle)
        rates, cpu, costs = run_rounds(args, source, servers, work, inputs or work)
    finally:
        for server in servers:
            server.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        if inputs is not None:
            shutil.rmtree(inputs, ignore_errors=True)
    print_summary(args, source, rates, cpu, costs)
    return 0


WRITERS = {"plain-fsync-writers": False, "plain-direct-writers": True}  # name -> O_DIRECT


def run_rounds(args, source: Instances, servers: list[Server], work: Path, inputs: Path) -> tuple[dict, dict, list]:
    """Every target once per round, in an order rotated each round; instances/s, CPU ms per instance, and
    what creating a file cost at the start of each round (seconds of CPU)."""
    names = [s.name for s in servers] + ([] if args.archives_only else list(WRITERS))
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}  # (server, clients) ms per instance
    costs = []
    for round_number in range(args.rounds):
        files = source.write(inputs / f"round-{round_number}", args.instances)
        costs.append(creation_cost(work))
        print(f"round {round_number + 1} file creation: {costs[-1] * 1e6:.0f} µs of CPU per file", flush=True)
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            os.sync()  # nothing written before this target is flushed on its time
            if name in WRITERS:
                seconds = plain_writers(files, work / f"{name}-{round_number}", args.associations, WRITERS[name])
            else:
                server = next(s for s in servers if s.name == name)
                server_before, clients_before = tree_cpu_seconds(server.process.pid), clients_cpu()
                seconds = storescu_parallel(files, server.port, server.ae_title, args.associations)
                cpu[name].append(
                    (
                        1000 * (tree_cpu_seconds(server.process.pid) - server_before) / args.instances,
                        1000 * (clients_cpu() - clients_before) / args.instances,
                    )
                )
            rates[name].append(args.instances / seconds)
            print(
                f"round {round_number + 1} {name:22s} {args.instances / seconds:8.1f} instances/s ({seconds:.2f} s)",
                flush=True,
            )
        shutil.rmtree(inputs / f"round-{round_number}")  # (on the work disk only without room on tmpfs)
    return rates, cpu, costs


def print_summary(args, source: Instances, rates: dict, cpu: dict, costs: list[float]) -> None:
    medians = {n: statistics.median(r) for n, r in rates.items()}
    print(
        f"\n{args.instances} x {source.label} instances, {args.associations} associations, "
        f"{args.rounds} rounds (median):"
    )
    print(
        f"  file creation on the work disk: {statistics.median(costs) * 1e6:.0f} µs of CPU per file "
        f"(max {max(costs) * 1e6:.0f}; every target creates one file per instance)"
    )
    for name in rates:
        cpu_note = ""
        if cpu.get(name):
            server_ms = statistics.median(c[0] for c in cpu[name])
            clients_ms = statistics.median(c[1] for c in cpu[name])
            cpu_note = f"  CPU per instance: server {server_ms:.2f} ms, clients {clients_ms:.2f} ms"
        print(
            f"  {name:22s} {medians[name]:8.1f} instances/s  {medians[name] * source.mean_bytes / 1e6:7.1f} MB/s  "
            f"(min {min(rates[name]):.1f}, max {max(rates[name]):.1f}){cpu_note}"
        )
    ours = medians["reference-archive"]
    if not args.archives_only:
        limit = max(medians[name] for name in WRITERS)
        print(f"  reference archive / Orthanc              = {ours / medians['orthanc']:.2f}x (goal >= 2.0x)")
        print(f"  reference archive / plain fsync writers  = {ours / medians['plain-fsync-writers']:.2f}x (page cache)")
        print(f"  reference archive / plain direct writers = {ours / medians['plain-direct-writers']:.2f}x (O_DIRECT)")
        print(f"  reference archive / physical limit       = {ours / limit:.2f}x (the faster writers; goal >= 0.60x)")
        print(f"  reference archive / storescp (no fsync)  = {ours / medians['storescp']:.2f}x")
        print(
            f"  reference archive / clients' ceiling     = {ours / medians['clients-ceiling']:.2f}x "
            "(storescp --ignore: stores nothing)"
        )
    if args.page_cache_archive:
        print(f"  O_DIRECT / page cache (same archive)     = {ours / medians['archive-page-cache']:.2f}x")
    if args.compare_tree:
        other = f"archive-{args.compare_tree.resolve().name}"
        print(f"  reference archive / {other:20s} = {ours / medians[other]:.2f}x (this tree / --compare-tree)")


if __name__ == "__main__":
    sys.exit(main())
