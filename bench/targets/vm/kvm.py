"""Can KVM really boot a Linux guest here? A bounded probe, not a look at /dev/kvm alone.

/dev/kvm can exist and still fail a real kernel (a nested or paravirtual KVM module such as
kvm_pvm runs firmware but stops at the guest kernel). The probe boots the guest image's kernel
without a root file system: reaching the kernel's own "unable to mount root" panic proves the
accelerator ran a full kernel start-up. -no-reboot turns the panic into QEMU exiting.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common.processes import last_line, stop_process
from bench.targets.vm.tools import require

PROBE_SECONDS = {"kvm": 20.0, "tcg": 180.0}  # a KVM kernel reaches its root mount in 1-3 s
KERNEL_REACHED = ("Kernel panic", "VFS: Unable to mount root")


@dataclass(frozen=True)
class ProbeResult:
    accelerator: str
    boots: bool
    reason: str
    seconds: float


def kvm_device_problem() -> str | None:
    if not Path("/dev/kvm").exists():
        return "no /dev/kvm (no hardware virtualization, or the kvm module is not loaded)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no read/write permission on /dev/kvm (join the kvm group)"
    return None


def loaded_kvm_modules() -> list[str]:
    return sorted(p.name for p in Path("/sys/module").glob("kvm*")) if Path("/sys/module").exists() else []


def probe(kernel: Path, accelerator: str) -> ProbeResult:
    """Boot `kernel` under `accelerator` until it panics for want of a root file system."""
    started = time.monotonic()
    if accelerator == "kvm" and (problem := kvm_device_problem()):
        return ProbeResult(accelerator, False, problem, 0.0)
    timeout = PROBE_SECONDS[accelerator]
    with tempfile.TemporaryDirectory(prefix="pacsbench-probe-") as tmp:
        console = Path(tmp) / "console.log"
        cmd = [
            require("qemu-system-x86_64"),
            "-machine",
            f"q35,accel={accelerator}",
            "-cpu",
            "host" if accelerator == "kvm" else "max",
            "-m",
            "256",
            "-smp",
            "1",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-chardev",
            f"file,id=console,path={console}",
            "-serial",
            "chardev:console",
            "-kernel",
            str(kernel),
            "-append",
            "console=ttyS0 panic=-1 root=/dev/pacsbench-probe-none",
        ]
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            output = b""
        finally:
            stop_process(process, 2, group=True)
        text = console.read_text(errors="replace") if console.exists() else ""
    seconds = time.monotonic() - started
    if any(marker in text for marker in KERNEL_REACHED):
        return ProbeResult(accelerator, True, "booted a Linux kernel", seconds)
    said = output.decode(errors="replace").strip()
    if said:
        reason = f"QEMU: {last_line(said)}"
    elif text.strip():
        reason = f"the kernel stopped within {timeout:g} s after: {last_line(text)[:100]}"
    else:
        reason = f"a Linux kernel did not start within {timeout:g} s (no console output)"
    modules = loaded_kvm_modules()
    if accelerator == "kvm" and "kvm_pvm" in modules:
        reason += " (kvm_pvm: a paravirtual nested KVM that cannot run a stock kernel)"
    return ProbeResult(accelerator, False, reason, seconds)


def kvm_unusable_message(kvm: ProbeResult, tcg: ProbeResult) -> str:
    alternative = (
        'tcg can (pure emulation, slower): use kind = "tcg"' if tcg.boots else f"tcg cannot either: {tcg.reason}"
    )
    return f"KVM cannot boot a guest here: {kvm.reason}; {alternative}"
