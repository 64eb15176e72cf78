"""The `orthanc` and `dcmtk` targets: an installed Orthanc or DCMTK dcmqrscp with a generated configuration.

Both run as local processes in their own process group (dcmqrscp forks per association), with
TCP_NODELAY=1 in their environment (both read it; without it each request can stall ~40 ms on
Nagle's algorithm). Data goes to the run folder and is removed afterwards unless keep_data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import check_port_free, free_local_port, stop_process_group
from bench.dicom.peer import Peer
from bench.load.scenario import ClientSpec, TargetSpec
from bench.targets.probes import fetch_status, host_hypervisor, save_server_status, wait_for_echo
from bench.targets.vm.tools import last_line

START_TIMEOUT = 30.0
STOP_GRACE = 20.0


def find_program(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/usr/bin")
    if not path:
        raise UserError(f"{name} not found: install it (Debian: apt-get install {package})")
    return path


def program_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


class InstalledArchive:
    """Start a program with a generated configuration, wait for C-ECHO, stop its process group."""

    kind = ""
    log_name = ""

    def __init__(self, spec: TargetSpec, client: ClientSpec):
        self.spec, self.client = spec, client
        self.process: subprocess.Popen | None = None
        self.peer: Peer | None = None
        self.folder: Path | None = None
        self.ready_seconds: float | None = None
        self.exit_code: int | None = None
        self.version = ""

    def command(self, folder: Path, port: int) -> list[str]:
        raise NotImplementedError

    def start(self, run_dir: Path) -> None:
        if self.spec.port:
            check_port_free(self.spec.port)
        port = self.spec.port or free_local_port()
        self.folder = run_dir / self.kind
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = self.command(self.folder, port)
        log = run_dir / self.log_name
        started = time.monotonic()
        with log.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "TCP_NODELAY": "1"}, start_new_session=True)
        self.peer = Peer("127.0.0.1", port, self.spec.ae_title)
        try:
            wait_for_echo(self.peer, self.client.calling_ae, START_TIMEOUT, alive=lambda: self.process.poll() is None)
        except UserError:
            reason = last_line(log.read_text(errors="replace")) if log.exists() else "no output"
            self.stop()
            raise UserError(f"{self.kind} did not answer C-ECHO within {START_TIMEOUT:g} s: {reason} "
                            f"(see {log})") from None
        self.ready_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.exit_code is None:
            self.exit_code = stop_process_group(self.process, STOP_GRACE)
        if self.folder and not self.spec.keep_data:
            shutil.rmtree(self.folder / "storage", ignore_errors=True)

    def collect_metrics(self, run_dir: Path) -> None:
        pass

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.spec.label or self.kind, "server": self.version,
                "hypervisor": host_hypervisor(), "vcpus": os.cpu_count(),
                "network": "loopback", "host": "127.0.0.1", "port": self.peer.port if self.peer else None,
                "ae_title": self.spec.ae_title,
                "data": str(self.folder) if self.folder else None, "storage_kept": self.spec.keep_data,
                "environment_variables": {"TCP_NODELAY": "1"}, "ready_seconds": self.ready_seconds,
                "exit_code": self.exit_code}


class OrthancTarget(InstalledArchive):
    kind = "orthanc"
    log_name = "orthanc.log"

    def command(self, folder: Path, port: int) -> list[str]:
        program = find_program("Orthanc", "orthanc")
        self.version = program_version([program, "--version"])
        self.http_port = free_local_port()
        config = {
            "Name": "pacsbench", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "storage"),
            "DicomAet": self.spec.ae_title, "DicomPort": port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "SyncStorageArea": True,  # fsync each file before answering, like the reference archive
            "Plugins": [],  # none of the system's plugins: the bare archive
            "StorageCompression": False, "MaximumStorageSize": 0, "MaximumPatientCount": 0,
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        return [program, str(folder / "orthanc.json")]

    def collect_metrics(self, run_dir: Path) -> None:
        if self.process is not None and self.process.poll() is None:
            save_server_status(run_dir, f"http://127.0.0.1:{self.http_port}", "/statistics")

    def start(self, run_dir: Path) -> None:
        super().start(run_dir)
        system = fetch_status(f"http://127.0.0.1:{self.http_port}", "/system")
        if system.get("Version"):
            self.version = f"Orthanc {system['Version']}"

    def describe(self) -> dict:
        return {**super().describe(), "sync_storage_area": True, "plugins": []}


class DcmqrscpTarget(InstalledArchive):
    kind = "dcmtk"
    log_name = "dcmqrscp.log"

    def command(self, folder: Path, port: int) -> list[str]:
        program = find_program("dcmqrscp", "dcmtk")
        self.version = program_version([program, "--version"])
        storage = folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        max_pdu = self.spec.max_pdu or 131072  # dcmqrscp's ceiling; 0 (unlimited) is not allowed there
        (folder / "dcmqrscp.cfg").write_text(
            f"NetworkTCPPort = {port}\nMaxPDUSize = {min(max_pdu, 131072)}\nMaxAssociations = 64\n"
            "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
            # AE, storage, access, (max studies, max bytes per study), peers allowed
            f"AETable BEGIN\n{self.spec.ae_title} {storage} RW (100000, 4096mb) ANY\nAETable END\n")
        return [program, "--config", str(folder / "dcmqrscp.cfg"), "--disable-host-lookup"]
