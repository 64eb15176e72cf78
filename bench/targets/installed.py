"""The `orthanc` and `dcmtk` targets: an installed Orthanc or DCMTK dcmqrscp with a generated configuration.

Both run as local processes in their own process group (bench.targets.archive_process).
Data goes to the run folder and is removed afterwards unless keep_data. Each is configured
like the reference archive it is compared with: the scenario's PDU size, the harness's C-MOVE
destinations, and its durability stated in run.json (`fsync`). A setting the program cannot
honour (fsync for dcmqrscp, a PDU size out of its range) is an error, never ignored.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

from bench.common.errors import UserError
from bench.common.paths import remove_tree
from bench.common.processes import check_port_free, free_local_port
from bench.dicom.peer import Peer
from bench.dicom.readiness import NoEchoAnswer
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import InstalledSpec, OrthancSpec
from bench.targets.archive_process import NODELAY_ENVIRONMENT, ArchiveProcess
from bench.targets.probes import fetch_status, hypervisor_labels, save_server_status
from bench.targets.target import Target
from bench.targets.vm.tools import require
from server_under_test.environment import detect_hypervisor

START_TIMEOUT = 30.0
STOP_GRACE = 20.0
# Debian's orthanc-dicomweb; the plugin serves PS3.18 under this root of Orthanc's HTTP port.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DICOMWEB_ROOT = "/dicom-web/"


def program_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def orthanc_config(
    storage: Path, spec: InstalledSpec, dicom_port: int, http_port: int, destinations: dict[str, tuple[str, int]]
) -> dict:
    """Orthanc's configuration for a benchmark: the bare archive, storing under `storage`."""
    return {
        "Name": "pacsbench",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomAet": spec.ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "SyncStorageArea": spec.fsync,  # fsync each file before answering, like the reference archive
        "MaximumPduLength": spec.pdu_size,
        # The harness's Storage SCPs, where C-MOVE sends; any calling AE may query and retrieve, as on native.
        "DicomModalities": {ae: [ae, host, port] for ae, (host, port) in destinations.items()},
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "Plugins": [],  # none of the system's plugins: the bare archive
        "StorageCompression": False,
        "MaximumStorageSize": 0,
        "MaximumPatientCount": 0,
    }


def orthanc_dicomweb_config(plugin: Path) -> dict:
    """What loads Orthanc's DICOMweb plugin on the archive's HTTP port (STOW-RS goes to the same storage, so the
    same SyncStorageArea holds for it); WADO-URI and the plugin's own client to other servers stay off."""
    return {
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": False, "Ssl": False, "Servers": {}},
    }


def dcmqrscp_config(storage: Path, spec: InstalledSpec, port: int, destinations: dict[str, tuple[str, int]]) -> str:
    """dcmqrscp's configuration: one read-write AE storing under `storage`, the C-MOVE destinations in HostTable."""
    hosts = "".join(
        f"destination{i} = ({ae}, {host}, {dest_port})\n"
        for i, (ae, (host, dest_port)) in enumerate(sorted(destinations.items()), start=1)
    )
    return (
        f"NetworkTCPPort = {port}\nMaxPDUSize = {spec.pdu_size}\nMaxAssociations = 64\n"
        f"HostTable BEGIN\n{hosts}HostTable END\nVendorTable BEGIN\nVendorTable END\n"
        # AE, storage, access, (max studies, max bytes per study), peers allowed
        f"AETable BEGIN\n{spec.ae_title} {storage} RW (100000, 4096mb) ANY\nAETable END\n"
    )


class InstalledArchive(Target):
    """Start a program with a generated configuration, wait for C-ECHO, stop its process group."""

    program = ""  # the executable, found on PATH (or sbin)
    log_name = ""

    fsyncs = True  # whether the program can fsync what it stores before answering

    spec: InstalledSpec

    def __init__(self, spec: InstalledSpec, client: ClientSpec):
        if spec.fsync and not self.fsyncs and "fsync" in spec.model_fields_set:
            raise UserError(
                f"{self.kind} targets cannot fsync what they store ({self.program} has no such setting): "
                "set fsync = false, or compare with a target that can"
            )
        super().__init__(spec, client)
        self.archive: ArchiveProcess | None = None
        self.folder: Path | None = None
        self.version = ""

    def configure(self, folder: Path, port: int) -> list[str]:
        """Write the program's configuration into `folder`; the arguments that make it read it."""
        raise NotImplementedError

    def start(self, run_dir: Path) -> None:
        if self.spec.port:
            check_port_free(self.spec.port)
        port = self.spec.port or free_local_port()
        self.folder = run_dir / self.kind
        self.folder.mkdir(parents=True, exist_ok=True)
        program = require(self.program)
        self.version = program_version([program, "--version"])
        command = [program, *self.configure(self.folder, port)]
        self.peer = Peer("127.0.0.1", port, self.spec.ae_title)
        budget = self.prepare_budget(run_dir)
        self.archive = ArchiveProcess(command, self.peer, run_dir / self.log_name, preexec=budget.enter)
        try:
            self.ready_seconds = self.archive.start(self.client.calling_ae, START_TIMEOUT)
        except NoEchoAnswer as exc:
            raise UserError(f"{self.kind} did not answer C-ECHO within {START_TIMEOUT:g} s: {exc.reason}") from None

    @property
    def exit_code(self) -> int | None:
        return self.archive.exit_code if self.archive else None

    def running(self) -> bool:
        return self.archive is not None and self.archive.alive()

    def server_pid(self) -> int | None:
        return self.archive.process.pid if self.archive and self.archive.process else None

    def stop(self) -> None:
        if self.archive is not None:
            self.archive.stop(STOP_GRACE)
        self.release_budget()
        if self.folder and not self.spec.keep_data:
            remove_tree(self.folder / "storage")

    def describe(self) -> dict:
        host = detect_hypervisor()
        return {
            "kind": self.kind,
            "label": self.label,
            "server": self.version,
            **hypervisor_labels(host["hypervisor"], None, "this host"),
            "container": host["container"],
            "vcpus": os.cpu_count(),
            "budget": self.budget_record(),
            "network": "loopback",
            "host": "127.0.0.1",
            "port": self.peer.port if self.peer else None,
            "ae_title": self.spec.ae_title,
            "max_pdu": self.spec.pdu_size,
            "fsync": self.spec.fsync and self.fsyncs,
            "destinations": {ae: f"{host}:{port}" for ae, (host, port) in self.destinations.items()},
            "data": str(self.folder) if self.folder else None,
            "storage_kept": self.spec.keep_data,
            "environment_variables": dict(NODELAY_ENVIRONMENT),
            "ready_seconds": self.ready_seconds,
            "exit_code": self.exit_code,
        }


class OrthancTarget(InstalledArchive):
    kind = "orthanc"
    program = "Orthanc"
    log_name = "orthanc.log"

    spec: OrthancSpec

    def configure(self, folder: Path, port: int) -> list[str]:
        self.http_port = free_local_port()
        config = orthanc_config(folder / "storage", self.spec, port, self.http_port, self.destinations)
        if self.spec.dicomweb:
            config |= orthanc_dicomweb_config(dicomweb_plugin())
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        return [str(folder / "orthanc.json")]

    @property
    def plugins(self) -> list[str]:
        return [str(DICOMWEB_PLUGIN)] if self.spec.dicomweb else []

    def start(self, run_dir: Path) -> None:
        super().start(run_dir)
        base = f"http://127.0.0.1:{self.http_port}"
        system = fetch_status(base, "/system")
        if system.get("Version"):
            self.version = f"Orthanc {system['Version']}"
        if self.spec.dicomweb:
            self.peer = replace(self.peer, dicomweb_url=base + DICOMWEB_ROOT.rstrip("/"))

    def collect_metrics(self, run_dir: Path) -> None:
        if self.running():
            save_server_status(run_dir, f"http://127.0.0.1:{self.http_port}", "/statistics")

    def describe(self) -> dict:
        return {
            **super().describe(),
            "sync_storage_area": self.spec.fsync,
            "plugins": self.plugins,
            "dicomweb_url": self.peer.dicomweb_url if self.peer else None,
        }


def dicomweb_plugin() -> Path:
    """Orthanc's DICOMweb plugin, or a one-line error naming the package."""
    if not DICOMWEB_PLUGIN.is_file():
        raise UserError(
            f"orthanc target with dicomweb = true: no DICOMweb plugin at {DICOMWEB_PLUGIN} "
            "(apt-get install orthanc-dicomweb)"
        )
    return DICOMWEB_PLUGIN


class DcmqrscpTarget(InstalledArchive):
    kind = "dcmtk"
    program = "dcmqrscp"
    log_name = "dcmqrscp.log"
    fsyncs = False  # dcmqrscp writes files without fsync: run.json says so

    def configure(self, folder: Path, port: int) -> list[str]:
        storage = folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        (folder / "dcmqrscp.cfg").write_text(dcmqrscp_config(storage, self.spec, port, self.destinations))
        return ["--config", str(folder / "dcmqrscp.cfg"), "--disable-host-lookup"]
