"""Backup and restore benchmark: backup and restore MB/s of the reference archive, and ingest during a backup.

The archive is filled first (--prefill instances), then each round measures, in the same
run: ingest alone and ingest while backups run back to back (the two alternate in order
from round to round), then a backup with nothing else running and the restore of that
backup into an empty folder (manifest check included). Ingest is the archive benchmark's:
2 MB XA instances from 4 DCMTK storescu processes (TCP_NODELAY=1), fresh UIDs per round.
Backup and restore run in this process, through the functions `pacsbench archive` calls.

    python -m bench.benchmarks.backup_restore [--prefill 200] [--instances 100] [--rounds 3]

Prints per round and as medians: ingest instances/s alone and during a backup and their
ratio, backup MB/s alone and under ingest, restore MB/s, and the hours that restore speed
needs for one year of the seed paper's load, judged against its recovery claim. Not a
test: figures depend on the machine and its neighbours.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from bench.analysis.claims import SEED_YEAR_BYTES, judge, load_claims, restore_hours_per_year
from bench.benchmarks.archive_ingest import INSTANCE_MB, start_reference_archive, storescu_parallel, write_round
from bench.runs.disk import free_bytes, gb
from bench.studies.pixels import RunShape, synthesize_run
from server_under_test.storage.backup import Copied, archive_config, backup, restore


def backups_until(stop: threading.Event, data: Path, work: Path, started: threading.Event) -> list[Copied]:
    """Back up again and again until `stop` (each backup removed once measured); their figures."""
    config = archive_config(None, data)
    done = []
    while not stop.is_set():
        out = work / f"backup-under-load-{len(done)}"
        started.set()
        done.append(backup(config, out)[1])
        shutil.rmtree(out)
    return done


def ingest_during_backups(
    files: list[Path], server, data: Path, work: Path, associations: int
) -> tuple[float, list[Copied]]:
    """Instances/s of an ingest that runs entirely while backups run; the backups' figures."""
    stop, started, result = threading.Event(), threading.Event(), []
    loop = threading.Thread(target=lambda: result.extend(backups_until(stop, data, work, started)))
    loop.start()
    started.wait()
    try:
        seconds = storescu_parallel(files, server.port, server.ae_title, associations)
    finally:
        stop.set()
        loop.join()
    return len(files) / seconds, result


def check_free_space(work: Path, prefill: int, instances: int, rounds: int) -> None:
    """The archive keeps what it stores; a backup and a restore of it exist at once, plus a round's input."""
    archive = (prefill + 2 * instances * rounds) * INSTANCE_MB * 1e6
    needed = 3 * archive + 2 * instances * INSTANCE_MB * 1e6
    free = free_bytes(work)  # (--work may name a folder still to be made)
    if free < needed:
        raise SystemExit(
            f"{work}: the run needs about {gb(needed)} free, the file system has "
            f"{gb(free)} (use --work elsewhere, or fewer instances)"
        )


def recovery_verdict(restore_mb_per_s: float) -> str:
    hours = restore_hours_per_year(restore_mb_per_s)
    claims = [c for s in load_claims() for c in s.claims if c.metric == "restore_hours_per_year"]
    verdicts = [f"{c.name}: {judge(c, {c.metric: hours}, {}).verdict} ({c.bound_text()})" for c in claims]
    return (
        f"  restore of one year of the seed paper's load ({SEED_YEAR_BYTES / 1e9:.0f} GB) = {hours:.2f} h; "
        + "; ".join(verdicts)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefill", type=int, default=200, help="instances stored before the rounds (default 200)")
    parser.add_argument(
        "--instances", type=int, default=100, help="instances per ingest, alone and during a backup (default 100)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--associations", type=int, default=4, help="parallel storescu processes (default 4)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if not Path("/usr/bin/storescu").exists():
        raise SystemExit("/usr/bin/storescu is missing (apt-get install dcmtk)")
    check_free_space(args.work or Path(tempfile.gettempdir()), args.prefill, args.instances, args.rounds)
    work = args.work or Path(tempfile.mkdtemp(prefix="pacsbench-backup-"))
    work.mkdir(parents=True, exist_ok=True)
    pixels = synthesize_run(RunShape(1024, 1024, 1, 12, mask_frames=0), seed=7)
    server = start_reference_archive(work)
    data = work / server.name
    alone, during, backup_alone, backup_loaded, restores = [], [], [], [], []
    try:
        prefill = write_round(work / "prefill", args.prefill, pixels)
        storescu_parallel(prefill, server.port, server.ae_title, args.associations)
        shutil.rmtree(work / "prefill")
        for round_number in range(args.rounds):
            inputs = {
                kind: write_round(work / f"round-{round_number}-{kind}", args.instances, pixels)
                for kind in ("alone", "during")
            }
            for kind in ("alone", "during") if round_number % 2 == 0 else ("during", "alone"):
                if kind == "alone":
                    alone.append(
                        args.instances
                        / storescu_parallel(inputs[kind], server.port, server.ae_title, args.associations)
                    )
                else:
                    rate, copies = ingest_during_backups(inputs[kind], server, data, work, args.associations)
                    during.append(rate)
                    backup_loaded.extend(c.mb_per_s for c in copies)
                shutil.rmtree(work / f"round-{round_number}-{kind}")
            _, copied = backup(archive_config(None, data), work / "backup")
            _, restored = restore(work / "backup", archive_config(None, work / "restored"))
            backup_alone.append(copied.mb_per_s)
            restores.append(restored.mb_per_s)
            print(
                f"round {round_number + 1}: ingest {alone[-1]:.1f} instances/s alone, {during[-1]:.1f} during a "
                f"backup; backup {copied.mb_per_s:.1f} MB/s ({copied.instances} instances, "
                f"{copied.bytes / 1e6:.0f} MB); restore {restored.mb_per_s:.1f} MB/s",
                flush=True,
            )
            shutil.rmtree(work / "backup")
            shutil.rmtree(work / "restored")
    finally:
        server.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ingest_alone, ingest_during = statistics.median(alone), statistics.median(during)
    print(
        f"\n{args.prefill} + up to {2 * args.instances * args.rounds} x 2 MB XA instances, {args.associations} "
        f"associations, {args.rounds} rounds (median):"
    )
    print(f"  ingest alone              {ingest_alone:8.1f} instances/s")
    print(f"  ingest during a backup    {ingest_during:8.1f} instances/s")
    print(f"  during / alone            = {ingest_during / ingest_alone:.2f}x")
    print(f"  backup alone              {statistics.median(backup_alone):8.1f} MB/s")
    print(f"  backup under ingest       {statistics.median(backup_loaded):8.1f} MB/s ({len(backup_loaded)} backups)")
    print(f"  restore                   {statistics.median(restores):8.1f} MB/s (manifest check included)")
    print(recovery_verdict(statistics.median(restores)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
