"""Launch one QEMU guest: accelerator, vCPUs, memory, system disk (-snapshot), a data disk, network.

QEMU runs in its own process group (stopping kills the group) with the guest console written to a log file, appended to
at each launch: after a fault it holds the first boot's shutdown too. Every setting is kept in `describe()` for the
run's metadata.

start() makes the data disk and the network, then launches QEMU; a fault may end QEMU
(`halt`) and `launch` it again on the same disk and network (a power cycle); stop() at the
end of the run ends QEMU and removes the network and the data disk. A QMP socket lets a
fault ask the guest to shut down (Ctrl-Alt-Del) or take the NIC's link down.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import die_with_parent, last_line, reap_group, run, signal_group, stop_process
from bench.targets.vm.image import BASE_CMDLINE, DATA_LABEL, GuestImage
from bench.targets.vm.qmp import SUN_PATH_MAX, qmp_command
from bench.targets.vm.tools import require

DISK_DEVICES = {"virtio": "virtio-blk-pci", "ide": "ide-hd", "ahci": "ide-hd", "scsi": "scsi-hd"}
STOP_GRACE_SECONDS = 10
NIC_ID = "nic0"  # the guest NIC's device id, for QMP set_link
CTRL_ALT_DEL = [{"type": "qcode", "data": key} for key in ("ctrl", "alt", "delete")]  # QMP send-key


@dataclass(frozen=True)
class Machine:
    accelerator: str = "tcg"  # kvm | tcg
    vcpus: int = 2
    memory_mib: int = 2048
    system_bus: str = "virtio"  # virtio | ide | ahci | scsi (ide/ahci/scsi: what VirtualBox/ESXi present)
    nic: str = "virtio-net-pci"  # or e1000, vmxnet3
    boot: str = "kernel"  # kernel: -kernel/-initrd with settings on the command line; disk: the image's GRUB
    data_format: str | None = "raw"  # raw | qcow2 | None (no data disk: the archive writes to the system disk)
    data_cache: str = "none"  # QEMU cache mode: none (O_DIRECT, flushes reach the host disk), writeback, ...
    data_bytes: int = 8 << 30


def qemu_version() -> str:
    first = run([require("qemu-system-x86_64"), "--version"], 30).splitlines()[0]
    match = re.search(r"version (\S+)", first)
    return match.group(1) if match else first


def make_data_disk(path: Path, fmt: str, size: int, log: Path) -> None:
    """An empty ext4 file system labelled for the guest to mount (made here: no loop device, no guest mkfs)."""
    raw = path if fmt == "raw" else path.with_suffix(".raw")
    run(
        [
            require("mkfs.ext4"),
            "-q",
            "-F",
            "-L",
            DATA_LABEL,
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            str(raw),
            str(size // 1024),
        ],
        120,
        log,
        "mkfs.ext4 (data disk)",
    )
    if fmt == "qcow2":
        run([require("qemu-img"), "convert", "-O", "qcow2", str(raw), str(path)], 300, log, "qemu-img (data disk)")
        raw.unlink()


class Qemu:
    """One guest process; start() returns at once, readiness is the caller's C-ECHO."""

    def __init__(
        self,
        image: GuestImage,
        machine: Machine,
        network,
        run_dir: Path,
        settings: dict[str, str],
        system_disk: tuple[Path, str] | None = None,
        data_disk: Path | None = None,
    ):
        self.image, self.machine, self.network, self.run_dir = image, machine, network, run_dir
        self.settings = settings
        # Another copy of the system disk (an exported VMDK) may stand in for the image's qcow2, and a disk made
        # elsewhere (an exported OVA's, in machine.data_format) for the data disk made here; that one is kept.
        self.system_disk, self.system_format = system_disk or (image.disk, "qcow2")
        self.console = run_dir / "console.log"
        self.qemu_log = run_dir / "qemu.log"
        self.own_data_disk = data_disk is None
        self.data_disk = data_disk or (run_dir / f"data.{machine.data_format}" if machine.data_format else None)
        self.process: subprocess.Popen | None = None
        self.command: list[str] = []
        self.exit_code: int | None = None
        self.launches = 0
        self.qmp_socket, self._qmp_folder = qmp_socket_path(run_dir)

    def kernel_cmdline(self) -> str:
        words = [BASE_CMDLINE, *self.network.kernel_args()]
        words += [f"pacsbench.{key}={value}" for key, value in self.settings.items()]
        if self.data_disk and self.own_data_disk:
            words.append(f"pacsbench.data={DATA_LABEL}")
        return " ".join(words)

    def disk_args(self) -> list[str]:
        m = self.machine
        args = ["-drive", f"file={self.system_disk},format={self.system_format},if=none,id=system,snapshot=on"]
        if self.data_disk:
            args += [
                "-drive",
                f"file={self.data_disk},format={m.data_format},if=none,id=data,cache={m.data_cache},aio=threads",
            ]
        if m.system_bus == "ahci":
            args += ["-device", "ahci,id=ahci"]
        elif m.system_bus == "scsi":
            args += ["-device", "pvscsi,id=scsi"]  # VMware's paravirtual SCSI, as ESXi presents it
        for index, drive in enumerate(["system", "data"] if self.data_disk else ["system"]):
            bus = {"ahci": f"ahci.{index}", "ide": f"ide.{index}", "scsi": "scsi.0"}.get(m.system_bus)
            args += ["-device", f"{DISK_DEVICES[m.system_bus]},drive={drive}" + (f",bus={bus}" if bus else "")]
        return args

    def build_command(self) -> list[str]:
        m = self.machine
        cmd = [
            *self.network.command_prefix,
            require("qemu-system-x86_64"),
            "-name",
            "pacsbench-guest",
            "-machine",
            f"q35,accel={m.accelerator}" if m.system_bus != "ide" else f"pc,accel={m.accelerator}",
            "-cpu",
            "host" if m.accelerator == "kvm" else "max",
            "-smp",
            str(m.vcpus),
            "-m",
            str(m.memory_mib),
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-chardev",
            f"file,id=console,path={self.console},append=on",
            "-serial",
            "chardev:console",
            "-qmp",
            f"unix:{self.qmp_socket},server=on,wait=off",
            *self.disk_args(),
            *self.network.qemu_args(f"{m.nic},id={NIC_ID}"),
        ]
        if m.boot == "kernel":
            cmd += [
                "-kernel",
                str(self.image.kernel),
                "-initrd",
                str(self.image.initrd),
                "-append",
                self.kernel_cmdline(),
            ]
        return cmd

    def start(self) -> None:
        """A fresh data disk and network, then QEMU."""
        if self.data_disk and self.own_data_disk:
            make_data_disk(self.data_disk, self.machine.data_format, self.machine.data_bytes, self.qemu_log)
        self.network.setup()
        try:
            self.launch()
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Start QEMU on the disk and network start() made (again after a fault: the same disk, ports, addresses)."""
        self.command = self.build_command()
        self.exit_code = None
        self.launches += 1
        with self.qemu_log.open("a") as log:
            log.write("$ " + " ".join(self.command) + "\n")
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        time.sleep(0.3)
        if self.process.poll() is not None:
            raise UserError(f"QEMU exited at start ({self.process.returncode}): {self.failure_reason()}")

    def signal(self, signum: int) -> None:
        """`signum` to QEMU's process group: SIGKILL is a power loss for the guest, SIGSTOP/SIGCONT a stalled VM."""
        signal_group(self.process.pid, signum)

    def qmp(self, command: str, **arguments):
        return qmp_command(self.qmp_socket, command, arguments or None)

    def request_shutdown(self) -> None:
        """An orderly shutdown: Ctrl-Alt-Del on the guest's keyboard. Its systemd stops the archive (SIGTERM),
        unmounts and syncs the disks and reboots, and QEMU exits at the reboot (-no-reboot).

        Not the ACPI power button (QMP system_powerdown): in the minimal guest image, logind (which
        handles that button) does not run, so the guest would ignore it."""
        self.qmp("send-key", keys=CTRL_ALT_DEL)

    def set_link(self, up: bool) -> None:
        """The guest NIC's link up or down (a pulled cable), as the guest sees it."""
        self.qmp("set_link", name=NIC_ID, up=up)

    def halt(self, timeout: float) -> int | None:
        """Wait until QEMU exits (SIGKILL to its group after `timeout`); its exit code. The disk stays."""
        self.exit_code = reap_group(self.process, timeout)
        return self.exit_code

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure_reason(self) -> str:
        text = self.qemu_log.read_text(errors="replace") if self.qemu_log.exists() else ""
        lines = [line for line in text.splitlines() if not line.startswith("$ ")]
        return last_line("\n".join(lines))

    def stop(self) -> None:
        """SIGTERM to QEMU's process group, SIGKILL after a grace period; then the network and data disk go."""
        try:
            if self.process is not None and self.exit_code is None:
                self.exit_code = stop_process(self.process, STOP_GRACE_SECONDS, group=True)
        finally:
            self.network.teardown()
            if self.data_disk and self.own_data_disk and self.data_disk.exists():
                self.data_disk.unlink()
            if self._qmp_folder:
                shutil.rmtree(self._qmp_folder, ignore_errors=True)

    def describe(self) -> dict:
        return {
            **asdict(self.machine),
            "system_disk": {
                "image": str(self.system_disk),
                "format": self.system_format,
                "snapshot": True,
                "bus": self.machine.system_bus,
            },
            "data_disk": {
                "path": str(self.data_disk),
                "format": self.machine.data_format,
                "cache": self.machine.data_cache,
                "bytes": self.machine.data_bytes,
                "bus": self.machine.system_bus,
                "aio": "threads",
            }
            if self.data_disk
            else None,
            "network": self.network.describe(),
            "kernel_cmdline": self.kernel_cmdline() if self.machine.boot == "kernel" else None,
            "command": self.command,
            "console_log": str(self.console),
            "qmp_socket": str(self.qmp_socket),
            "launches": self.launches,
            "exit_code": self.exit_code,
        }


def qmp_socket_path(run_dir: Path) -> tuple[Path, Path | None]:
    """run_dir/qmp.sock, or one in a short temporary folder (also returned, to remove) when that path is too long
    for a unix socket."""
    path = run_dir / "qmp.sock"
    if len(os.fsencode(path.absolute())) <= SUN_PATH_MAX:
        return path, None
    folder = Path(tempfile.mkdtemp(prefix="pacsbench-qmp-"))
    return folder / "qmp.sock", folder
