"""The `esxi` target: the reference archive's OVA deployed on an ESXi host or through a vCenter, for one run.

connect (TLS verified) -> remove the VMs killed harnesses of this host left -> find the datastore,
network and pool (before anything is made) -> deploy the OVA -> CPUs and memory to the budget,
memory fully reserved, the archive's settings as guestinfo keys, the data disk sized -> power on ->
the address VMware Tools reports -> C-ECHO (and DICOMweb, in a run with DICOMweb users). stop() powers
off and destroys (kept, powered off, with keep = true); the run calls it in a `finally`, and a SIGTERM
becomes an interrupt that reaches it (bench.common.processes.interrupt_on_sigterm).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import interrupt_on_sigterm
from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import EsxiSpec
from bench.targets.esxi import connection, deploy, machine
from bench.targets.guest_settings import dicomweb_url, guest_settings
from bench.targets.probes import (
    archive_facts,
    hypervisor_labels,
    save_server_status,
    wait_for_dicomweb,
    wait_for_status,
)
from bench.targets.target import Target

STATUS_TIMEOUT = 60.0


def ova_path(spec: EsxiSpec, progress: bool) -> Path:
    """The scenario's OVA (it must exist), or the current guest image's, exported when missing (bench.targets.vm)."""
    if spec.ova:
        return Path(spec.ova).expanduser()
    from bench.targets.vm.export import default_ova

    return default_ova(progress=progress)


class EsxiTarget(Target):
    """One VM on ESXi (or a vCenter's host) for one run: deployed, budgeted, powered on, then destroyed."""

    kind = "esxi"

    spec: EsxiSpec

    def __init__(self, spec: EsxiSpec, client: ClientSpec, progress: bool = True):
        super().__init__(spec, client)
        self.progress = progress
        self.session: connection.Session | None = None
        self.vm = None
        self.facts: dict = {}
        self.vm_facts: dict = {}
        self.settings_set: dict = {}
        self.removed: list[str] = []
        self.address: str | None = None

    def start(self, run_dir: Path) -> None:
        interrupt_on_sigterm()
        ova = deploy.read_ova(ova_path(self.spec, self.progress))
        self.session = connection.connect(self.spec)
        self.removed = machine.remove_leftovers(self.session)
        if self.removed:
            print(f"esxi: removed VMs a killed harness left: {', '.join(self.removed)}", file=sys.stderr)
        place = connection.placement(self.session)
        self.facts = connection.server_facts(self.session, place)
        self._say(f"deploying {ova.path.name} to {self.facts['datastore']} on {self.spec.host}")
        self.vm = deploy.deploy(
            self.session, ova, place, f"pacsbench-{run_dir.name}", machine.annotation(run_dir.name), self.progress
        )
        settings = guest_settings(self.spec, self.spec.port, self.spec.metrics_port, self.spec.dicomweb_port)
        self.settings_set = machine.reconfigure(
            self.vm, self.spec.cpus, self.spec.memory_mib, settings, self.spec.data_disk_gib
        )
        self.vm_facts = machine.vm_facts(self.vm)
        started = time.monotonic()
        self._say(f"powering {self.vm_facts['name']} on ({self.spec.cpus} vCPUs, {self.spec.memory_mib} MiB reserved)")
        machine.power_on(self.vm)
        self.address = machine.guest_address(self.vm, self.spec.boot_timeout)
        web = dicomweb_url(self.address, self.spec.dicomweb_port) if self.spec.dicomweb else None
        self.peer = Peer(self.address, self.spec.port, self.spec.ae_title, web)
        left = max(self.spec.boot_timeout - (time.monotonic() - started), 1.0)
        try:
            wait_for_echo(self.peer, self.client.calling_ae, left)
        except UserError:
            raise UserError(
                f"esxi target: the archive at {self.address}:{self.spec.port} (VMware Tools' address) did not "
                f"answer C-ECHO within {self.spec.boot_timeout:g} s of power-on"
            ) from None
        self.ready_seconds = time.monotonic() - started
        self.status = wait_for_status(self.guest_metrics_url(), STATUS_TIMEOUT)
        wait_for_dicomweb(web, STATUS_TIMEOUT)

    def _say(self, line: str) -> None:
        if self.progress:
            print(f"esxi: {line}", file=sys.stderr, flush=True)

    def guest_metrics_url(self) -> str | None:
        return f"http://{self.address}:{self.spec.metrics_port}" if self.address else None

    def hypervisor_source(self) -> dict | None:
        """What the sampler needs to read the VM's performance counters (bench.targets.esxi.perf); no secret."""
        if self.vm is None:
            return None
        return {
            "kind": "esxi",
            "spec": self.spec.model_dump(mode="json"),
            "vm": self.vm_facts.get("moref"),
            "vcpus": self.spec.cpus,
            "simulator": self.facts.get("simulator", False),
        }

    def collect_metrics(self, run_dir: Path) -> None:
        save_server_status(run_dir, self.guest_metrics_url(), timeout=STATUS_TIMEOUT)

    def warnings(self) -> list[str]:
        said = []
        if self.spec.insecure:
            said.append(f"esxi target {self.spec.host}: TLS not verified (insecure = true)")
        if self.facts.get("simulator"):
            said.append("esxi target: govmomi's simulator, not ESXi: the hypervisor_* figures are synthetic")
        if self.vm is not None and self.settings_set.get("data_disk") is None:
            said.append("esxi target: the OVA has no second (data) disk: the archive stores on its system disk")
        return said

    def stop(self) -> None:
        """Power off and destroy the VM (power off only with keep = true); log out. Safe to call twice."""
        vm, self.vm = self.vm, None
        if vm is not None:
            if self.spec.keep:
                try:
                    machine.power_off(vm)
                    machine.mark_kept(vm)
                except UserError as exc:
                    print(f"pacsbench: warning: {exc}", file=sys.stderr)
            else:
                self.vm_facts["destroyed"] = machine.remove(vm)
        if self.session is not None:
            self.session.close()
            self.session = None

    def budget_record(self) -> dict:
        """The VM's vCPUs and memory, the memory reserved in full by ESXi."""
        return {
            "cpus": self.spec.cpus,
            "memory_bytes": self.spec.memory_mib << 20,
            "enforced_by": "esxi-vm",
            "memory_reservation_bytes": self.spec.memory_mib << 20 if self.settings_set else None,
        }

    def describe(self) -> dict:
        facts = archive_facts(self.status)
        return {
            "kind": self.kind,
            "label": self.label,
            **facts,
            "requested_hypervisor": "esxi",
            **hypervisor_labels(facts.get("hypervisor"), "esxi", "the guest's /status"),
            "memory_mib": self.spec.memory_mib,
            "budget": self.budget_record(),
            "host": self.address,
            "port": self.spec.port,
            "ae_title": self.spec.ae_title,
            "fsync": self.spec.fsync,
            "max_pdu": self.spec.max_pdu,
            "metrics_url": self.guest_metrics_url(),
            "dicomweb_url": self.peer.dicomweb_url if self.peer else None,
            "network": f"the VM's card on port group {self.spec.network} (address from VMware Tools)",
            "ready_seconds": round(self.ready_seconds, 2) if self.ready_seconds else None,
            "boot_to_ready_seconds": round(self.ready_seconds, 2) if self.ready_seconds else None,
            "esxi": {
                "server": self.spec.host,
                "tls": connection.trust_words(self.spec),
                "insecure": self.spec.insecure,
                **self.facts,
                "vm": self.vm_facts or None,
                "guestinfo": self.settings_set.get("guestinfo"),
                "data_disk": self.settings_set.get("data_disk"),
                "kept": self.spec.keep,
                "leftovers_removed": self.removed,
            },
        }
