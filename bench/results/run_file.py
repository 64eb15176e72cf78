"""run.json written and read: the RunRecord, with the host facts and package versions every run records.

Every fact that moves a result is recorded (host, CPU, memory, hypervisor, versions, the full
scenario, target settings, the study pool), so a figure can be traced back; the record's shape is
bench.results.run_record.RunRecord.
"""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path

from bench.results.record_base import read_record, write_record
from bench.results.records import RUN_FILE
from bench.results.run_record import HostRecord, RunRecord
from server_under_test import environment

PACKAGES = ["pacsbench", "pydicom", "pynetdicom", "locust", "gevent", "numpy", "pandas", "matplotlib"]


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


def versions() -> dict[str, str | None]:
    """The versions of the packages a result depends on; None for one not installed."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


SECRET_OPTIONS = ("--web-auth",)  # options whose value is a password: never in run.json
ABBREVIATION = len("--web-a")  # argparse takes an unambiguous prefix of an option: hide those too


def _secret(name: str) -> bool:
    return any(option.startswith(name) and len(name) >= ABBREVIATION for option in SECRET_OPTIONS)


def command_line(argv: list[str]) -> list[str]:
    """The command as run.json records it: a secret option's value replaced by ***."""
    out, hide = [], False
    for arg in argv:
        name, sep, _ = arg.partition("=")
        if hide:
            out.append("***")
        elif sep and _secret(name):
            out.append(f"{name}=***")
        else:
            out.append(arg)
        hide = not sep and _secret(arg)
    return out


def write_run_json(run_dir: Path, record: RunRecord) -> Path:
    return write_record(run_dir / RUN_FILE, record)


def read_run_json(run_dir: Path) -> RunRecord:
    """run.json of `run_dir`; a one-line UserError when it is missing, unreadable or of a shape not read here."""
    return read_record(RunRecord, run_dir / RUN_FILE, "a run record")
