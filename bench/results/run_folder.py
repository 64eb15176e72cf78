"""Run folders: results/<run-id>/ with run.json saying who ran what, where, with which versions.

Every fact that moves a result is recorded here (host, CPU, memory, hypervisor, versions,
the full scenario, target settings, the study pool), so a figure can be traced back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import socket
from importlib import metadata
from pathlib import Path

RUN_FILE = "run.json"
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


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""


def _cpu_model_and_flags() -> tuple[str, bool]:
    model, hypervisor = platform.processor(), False
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name") and ":" in line:
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and " hypervisor" in line:
            hypervisor = True
    return model, hypervisor


def _memory_bytes() -> int | None:
    match = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    return int(match.group(1)) * 1024 if match else None


def host_facts() -> dict:
    """Where the harness runs: enough to tell bare metal from a VM and one box from another."""
    cpu, hypervisor_flag = _cpu_model_and_flags()
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "cpu_hypervisor_flag": hypervisor_flag,
        "dmi_sys_vendor": _read("/sys/class/dmi/id/sys_vendor"),
        "dmi_product_name": _read("/sys/class/dmi/id/product_name"),
        "load_average": list(os.getloadavg()),
    }


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


def write_run_json(run_dir: Path, record: dict) -> Path:
    path = run_dir / RUN_FILE
    temp = path.with_suffix(".json.tmp")
    temp.write_text(json.dumps(record, indent=2, default=str))
    temp.replace(path)
    return path


def read_run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / RUN_FILE).read_text())
