"""The `kvm` and `tcg` targets: the reference archive in a QEMU guest built by bench.targets.vm.image."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import interrupt_on_sigterm, last_line
from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import VmSpec
from bench.targets.budget import guest_budget
from bench.targets.guest_settings import guest_settings
from bench.targets.probes import (
    archive_facts,
    hypervisor_labels,
    save_server_status,
    wait_for_dicomweb,
    wait_for_status,
)
from bench.targets.target import Target
from bench.targets.vm.image import GuestImage, ensure_image
from bench.targets.vm.kvm import kvm_unusable_message, probe
from bench.targets.vm.network import GUEST_DICOM_PORT, GUEST_DICOMWEB_PORT, GUEST_METRICS_PORT, make_network
from bench.targets.vm.qemu import Machine, Qemu, qemu_version
from bench.targets.vm.tools import require

STATUS_TIMEOUT = 60.0  # /status runs systemd-detect-virt: seconds under emulation
REQUESTED_HYPERVISOR = {"kvm": "kvm", "tcg": "qemu"}  # what systemd-detect-virt says inside each


def check_accelerator(kind: str, image: GuestImage) -> dict:
    """For kvm: prove it boots a kernel here, else a one-line error saying why and whether tcg can."""
    if kind != "kvm":
        return {}
    kvm = probe(image.kernel, "kvm")
    if not kvm.boots:
        raise UserError(kvm_unusable_message(kvm, probe(image.kernel, "tcg")))
    return {"kvm_probe_seconds": round(kvm.seconds, 2)}


class GuestTarget(Target):
    """Boot the guest (system disk -snapshot, fresh data disk), wait for C-ECHO, stop by killing QEMU."""

    spec: VmSpec

    def __init__(self, spec: VmSpec, client: ClientSpec, progress: bool = True):
        super().__init__(spec, client)
        self.kind = spec.kind
        self.progress = progress
        self.image: GuestImage | None = None
        self.qemu: Qemu | None = None
        self.facts: dict = {}

    @property
    def label(self) -> str:
        """tcg, or tcg-tap for the other network mode, unless the scenario names it."""
        return self.spec.label or (self.kind if self.spec.network == "user" else f"{self.kind}-{self.spec.network}")

    def machine(self) -> Machine:
        s = self.spec
        return Machine(
            accelerator=self.kind,
            vcpus=s.cpus,
            memory_mib=s.memory_mib,
            data_format=s.data_disk_format,
            data_cache=s.data_disk_cache,
            data_bytes=s.data_disk_gib << 30,
        )

    def settings(self) -> dict[str, str]:
        return guest_settings(self.spec, GUEST_DICOM_PORT, GUEST_METRICS_PORT, GUEST_DICOMWEB_PORT)

    def start(self, run_dir: Path) -> None:
        require("qemu-system-x86_64")
        interrupt_on_sigterm()
        self.image = ensure_image(progress=self.progress)
        self.facts = {"qemu_version": qemu_version(), **check_accelerator(self.kind, self.image)}
        network = make_network(self.spec.network, self.spec.port, self.spec.dicomweb)
        self.qemu = Qemu(self.image, self.machine(), network, run_dir, self.settings())
        started = time.monotonic()
        self.qemu.start()
        self.record_server_pid(run_dir)
        # A tap guest's address (and so its DICOMweb URL) is known once the network is up.
        self.peer = Peer(network.address[0], network.address[1], self.spec.ae_title, network.dicomweb_url)
        self.ready_seconds = self._wait_for_boot(started)
        self.status = wait_for_status(network.metrics_url, STATUS_TIMEOUT)
        wait_for_dicomweb(network.dicomweb_url, STATUS_TIMEOUT)

    def _wait_for_boot(self, started: float) -> float:
        """Seconds from QEMU's launch (monotonic `started`) to the archive's first C-ECHO answer."""
        try:
            wait_for_echo(self.peer, self.client.calling_ae, self.spec.boot_timeout, alive=self.qemu.alive)
        except UserError:
            raise UserError(self.not_ready_reason()) from None
        return time.monotonic() - started

    # Faults (bench.runs.faults). SIGKILL to QEMU is a power loss for the guest: its page cache
    # dies, and only what it flushed (cache=none: to the host's file) remains. SIGTERM asks the
    # guest to shut down in order instead (Ctrl-Alt-Del): SIGTERM to QEMU itself would end it
    # without the guest knowing, a power loss again. A guest that does not shut down within the
    # stop timeout is killed: exit code -9 in run.json then, 0 after an orderly shutdown.
    def signal_archive(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            self.qemu.request_shutdown()
        else:
            self.qemu.signal(signum)

    def wait_for_exit(self, timeout: float) -> int | None:
        return self.qemu.halt(timeout)

    def start_again(self) -> float:
        """Boot again on the same data disk, ports and addresses; the seconds from launch to C-ECHO."""
        started = time.monotonic()
        self.qemu.launch()
        self.record_server_pid(self.qemu.run_dir)
        return self._wait_for_boot(started)

    def set_network(self, up: bool) -> None:
        self.qemu.set_link(up)

    def not_ready_reason(self) -> str:
        if not self.qemu.alive():
            return f"{self.kind} guest: QEMU exited ({self.qemu.process.returncode}): {self.qemu.failure_reason()}"
        console = self.qemu.console
        tail = last_line(console.read_text(errors="replace")) if console.exists() else "no console output"
        return (
            f"{self.kind} guest did not answer C-ECHO within {self.spec.boot_timeout:g} s "
            f"(console {console}: {tail[:120]})"
        )

    def collect_metrics(self, run_dir: Path) -> None:
        if self.qemu and self.qemu.alive():
            save_server_status(run_dir, self.qemu.network.metrics_url, timeout=STATUS_TIMEOUT)

    def server_pid(self) -> int | None:
        return self.qemu.process.pid if self.qemu and self.qemu.process else None

    def guest_metrics_url(self) -> str | None:
        return self.qemu.network.metrics_url if self.qemu else None

    def stop(self) -> None:
        if self.qemu:
            self.qemu.stop()

    def network_line(self) -> str:
        """One line for report tables; network_settings holds every detail."""
        if self.spec.network == "tap":
            return "tap on a bridge in a netns (like bridged), virtio-net, vhost=off"
        return "user-mode, hostfwd on 127.0.0.1 (like VirtualBox NAT), virtio-net"

    def disk_line(self) -> str:
        s = self.spec
        seen = archive_facts(self.status).get("disk")
        return (
            f"data: virtio-blk {s.data_disk_format}, cache={s.data_disk_cache}, {s.data_disk_gib} GiB ext4"
            + (f" ({seen} in the guest)" if seen else "")
            + "; system: qcow2 -snapshot"
        )

    def budget_record(self) -> dict:
        """The guest's vCPUs and RAM: its budget, for run.json and for the sampler's share of QEMU's CPU."""
        return guest_budget(self.spec.cpus, self.spec.memory_mib)

    def describe(self) -> dict:
        machine = self.qemu.describe() if self.qemu else {}
        return {
            "kind": self.kind,
            "label": self.label,
            **archive_facts(self.status),
            "requested_hypervisor": REQUESTED_HYPERVISOR[self.kind],
            **hypervisor_labels(
                archive_facts(self.status).get("hypervisor"), REQUESTED_HYPERVISOR[self.kind], "the guest's /status"
            ),
            "accelerator": self.kind,
            "memory_mib": self.spec.memory_mib,
            "budget": self.budget_record(),
            "network": self.network_line(),
            "disk": self.disk_line(),
            "network_settings": machine.get("network") or {"mode": self.spec.network},
            "disks": {"system": machine.get("system_disk"), "data": machine.get("data_disk")},
            "host": self.peer.host if self.peer else None,
            "port": self.peer.port if self.peer else None,
            "ae_title": self.spec.ae_title,
            "fsync": self.spec.fsync,
            "max_pdu": self.spec.max_pdu,
            "dicomweb_url": self.peer.dicomweb_url if self.peer else None,
            "boot_to_ready_seconds": round(self.ready_seconds, 2) if self.ready_seconds else None,
            "ready_seconds": round(self.ready_seconds, 2) if self.ready_seconds else None,
            "image": {
                "folder": str(self.image.folder),
                **{k: self.image.info.get(k) for k in ("digest", "kernel", "build_seconds")},
            }
            if self.image
            else None,
            "qemu": {
                **self.facts,
                **{k: v for k, v in machine.items() if k in ("command", "kernel_cmdline", "console_log", "exit_code")},
            },
        }
