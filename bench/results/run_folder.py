"""Run folders: results/<run-id>/ with run.json saying who ran what, where, with which versions.

Every fact that moves a result is recorded (host, CPU, memory, hypervisor, versions, the full
scenario, target settings, the study pool), so a figure can be traced back; run.json's shape is
bench.results.run_record.RunRecord.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import socket
from importlib import metadata
from pathlib import Path

from bench.results.record_base import read_record, write_record
from bench.results.records import RUN_FILE
from bench.results.run_record import HostRecord, RunRecord
from server_under_test import environment

SERVER_PID_FILE = "server.pid"  # the archive's current root pid (or QEMU's): rewritten on each (re)start
PACKAGES = ["pacsbench", "pydicom", "pynetdicom", "locust", "gevent", "numpy", "pandas", "matplotlib"]


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


def host_facts() -> HostRecord:
    """Where the harness runs: enough to tell bare metal from a VM and one box from another."""
    cpu, hypervisor_flag = environment.cpu_model_and_flag()
    vendor, product = environment.dmi_vendor_and_product()
    return HostRecord(
        hostname=socket.gethostname(),
        os=platform.platform(),
        kernel=platform.release(),
        python=platform.python_version(),
        cpu_model=cpu,
        cpus=os.cpu_count(),
        memory_bytes=environment.memory_bytes(),
        cpu_hypervisor_flag=hypervisor_flag,
        dmi_sys_vendor=vendor,
        dmi_product_name=product,
        load_average=list(os.getloadavg()),
    )


def versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def utc_iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat(timespec="milliseconds")


def write_run_json(run_dir: Path, record: RunRecord) -> Path:
    return write_record(run_dir / RUN_FILE, record)


def read_run_json(run_dir: Path) -> RunRecord:
    """run.json of `run_dir`; a one-line UserError when it is missing, unreadable or of a shape not read here."""
    return read_record(RunRecord, run_dir / RUN_FILE, "a run record")


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
