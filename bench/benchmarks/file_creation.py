"""What creating a file costs on a benchmark's disk, and a wait until it is cheap again.

Why this matters: ext4 without a journal (the file system of this project's CI machine, for one) will not
hand out an inode freed in the last minute (five, while its inode table block is still dirty), and it looks
at each such inode in turn before it finds one it may use (the kernel's `recently_deleted`, called from
`find_inode_bit`). After a benchmark deletes a few thousand files, every file any target creates costs up
to ~1 ms of kernel CPU instead of ~20 µs, for up to five minutes (measured here: 0.58 ms per file right
after deleting 3,000 files, 0.38 ms 70 s later, 0.02 ms after five minutes). An ingest benchmark whose
targets each create one file per instance, and which deletes its scratch files between targets, charges
the next targets for its own cleanup. So the benchmarks keep their scratch files until the run ends, read
their input from tmpfs, wait at the start until creating a file is cheap, and print what it cost in each
round, so that a figure taken in such a state can be told from one that was not.

The probe sees one block group: new files go to their folder's group, and targets that fill it spill into
others, which may still hold recently deleted inodes the probe did not meet (seen here: a run just after the
test suite's cleanup probed 16-67 µs while the archive's own creates spent ~4% of its CPU in that check). For
figures that must hold, run on a file system nothing has deleted from for five minutes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROBE_FILES = 64
CHEAP_SECONDS = 100e-6  # per file: a few times the cost on a file system with nothing to skip
PROBE_INTERVAL = 15.0
TMPFS = "/dev/shm"

_probes = itertools.count()


def creation_cost(folder: Path, files: int = PROBE_FILES) -> float:
    """CPU seconds this thread spends per new empty file in `folder` (kernel time included).

    The files stay: deleting them would add to what the next probe, or the next target, measures."""
    probe = folder / f"creation-probe-{os.getpid()}-{next(_probes)}"
    probe.mkdir(parents=True)
    started = time.thread_time()
    for number in range(files):
        os.close(os.open(probe / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.thread_time() - started) / files


def wait_until_cheap(folder: Path, longest: float, say: Callable[[str], None] = print) -> float:
    """Probe every 15 s until creating a file costs under CHEAP_SECONDS, for at most `longest` seconds;
    the last cost measured (the run goes on either way, and prints it)."""
    deadline = time.monotonic() + longest
    cost = creation_cost(folder)
    if cost >= CHEAP_SECONDS and longest > 0:
        say(
            f"creating a file on {folder} costs {cost * 1e6:.0f} µs of CPU (a recently emptied ext4 without a "
            f"journal, probably): waiting up to {longest:.0f} s for it to settle"
        )
    while cost >= CHEAP_SECONDS and time.monotonic() + PROBE_INTERVAL <= deadline:
        time.sleep(PROBE_INTERVAL)
        cost = creation_cost(folder)
    return cost


def settle(folder: Path, longest: float) -> None:
    """A benchmark's start: wait_until_cheap, then print what creating a file costs now."""
    cost = wait_until_cheap(folder, longest)
    print(f"file creation on the work disk: {cost * 1e6:.0f} µs of CPU per file", flush=True)


def input_folder(needed_bytes: float) -> Path | None:
    """A fresh folder on tmpfs for a benchmark's input files, when tmpfs has room for them (with a margin);
    None: put them on the work disk. Deleting files there costs the disk's inode allocator nothing."""
    if not os.path.isdir(TMPFS) or shutil.disk_usage(TMPFS).free < 2 * needed_bytes:
        return None
    return Path(tempfile.mkdtemp(prefix="pacsbench-input-", dir=TMPFS))


def add_settle_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settle",
        type=float,
        default=360.0,
        metavar="SECONDS",
        help="wait at most this long at the start for file creation on the work disk to be cheap again after "
        "recent deletions (ext4 without a journal: bench/benchmarks/file_creation.py; default 360, 0 = do not wait)",
    )
