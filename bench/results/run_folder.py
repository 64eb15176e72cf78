"""Run folders: results/<run-id>/, named when a run starts, and the archive's pid file the sampler follows.

run.json itself is written and read by bench.results.run_file. This module stays light (no
pydantic): the resource sampler's own process imports it as it starts with the load.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

SERVER_PID_FILE = "server.pid"  # the archive's current root pid (or QEMU's): rewritten on each (re)start


def new_run_dir(results: Path, scenario_name: str) -> Path:
    """results/<UTC timestamp>-<scenario>, made unique if two runs start in one second."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario_name).strip("-") or "run"
    for n in range(1000):
        candidate = results / (f"{stamp}-{safe}" if n == 0 else f"{stamp}-{safe}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {results}")


def utc_iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="milliseconds")


def write_server_pid(run_dir: Path, pid: int) -> None:
    """server.pid, replaced in one rename: the resource sampler re-reads it and never sees half a number."""
    path = run_dir / SERVER_PID_FILE
    temp = path.with_suffix(".pid.tmp")
    temp.write_text(f"{pid}\n")
    temp.replace(path)


def read_server_pid(path: Path) -> int | None:
    """The pid in a server.pid file; None when there is none (yet)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
