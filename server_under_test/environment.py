"""Where the archive runs: hypervisor, CPUs, memory, the storage device under each tier.

Results are labelled by what was detected, not by what a user typed. systemd-detect-virt
knows the most hypervisors; DMI strings and the CPU's hypervisor flag back it up. The one
host detection of the project: the harness asks the same questions of its own host here.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

DMI_VENDORS = {
    "QEMU": "qemu", "VMware, Inc.": "vmware", "innotek GmbH": "oracle", "Oracle Corporation": "oracle",
    "Microsoft Corporation": "microsoft", "Xen": "xen", "Amazon EC2": "amazon", "Google": "google",
    "Parallels Software International Inc.": "parallels", "Red Hat": "kvm",
}


def read_text(path: str) -> str:
    """A /proc or /sys file's text, stripped; "" when absent or unreadable (a fact is best effort)."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""


def _systemd_detect_virt() -> str | None:
    tool = shutil.which("systemd-detect-virt")
    if not tool:
        return None
    try:
        result = subprocess.run([tool], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or "none"


def cpu_model_and_flag() -> tuple[str, bool]:
    """The CPU model name and whether the CPU reports running under a hypervisor."""
    model, flag = platform.processor(), False
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name") and ":" in line:
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and " hypervisor" in f"{line} ":
            flag = True
    return model, flag


def memory_bytes() -> int | None:
    for line in read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def dmi_vendor_and_product() -> tuple[str, str]:
    return read_text("/sys/class/dmi/id/sys_vendor"), read_text("/sys/class/dmi/id/product_name")


def detect_hypervisor() -> dict:
    """The hypervisor this host runs on ("none" on bare metal) and how it was told."""
    vendor, product = dmi_vendor_and_product()
    systemd = _systemd_detect_virt()
    _, flag = cpu_model_and_flag()
    by_dmi = DMI_VENDORS.get(vendor)
    if product == "VirtualBox":
        by_dmi = "oracle"
    if systemd and systemd != "none":
        name, how = systemd, "systemd-detect-virt"
    elif by_dmi:
        name, how = by_dmi, "dmi"
    elif flag:
        name, how = "unknown", "cpu hypervisor flag"
    else:
        name, how = "none", "systemd-detect-virt" if systemd else "dmi and cpu flags"
    return {"hypervisor": name, "detected_by": how, "systemd_detect_virt": systemd, "dmi_sys_vendor": vendor,
            "dmi_product_name": product, "cpu_hypervisor_flag": flag}


def _mount_of(path: Path) -> tuple[str, str]:
    best, fs_type = "/", ""
    for line in read_text("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1].rstrip("/") + "/") and len(parts[1]) >= len(best):
            best, fs_type = parts[1], parts[2]
    return best, fs_type


def storage_device(path: Path) -> dict:
    """The block device, rotational flag and file system holding `path` (best effort)."""
    path = path.resolve()
    st = os.stat(path)
    sys_dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    device = sys_dev.resolve().name if sys_dev.exists() else ""
    queue = sys_dev / "queue"
    if sys_dev.exists() and not queue.exists():
        queue = sys_dev.resolve().parent / "queue"  # a partition: ask the whole disk
    mount, fs_type = _mount_of(path)
    usage = shutil.disk_usage(path)
    return {"path": str(path), "device": device, "rotational": read_text(f"{queue}/rotational") or None,
            "model": read_text(f"{queue.parent}/device/model") or None, "mount": mount, "fs_type": fs_type,
            "fs_total_bytes": usage.total, "fs_free_bytes": usage.free}


def describe(storage_paths: list[Path]) -> dict:
    model, _ = cpu_model_and_flag()
    return {
        **detect_hypervisor(),
        "cpu_model": model,
        "vcpus": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "kernel": platform.release(),
        "hostname": platform.node(),
        "storage": [storage_device(p) for p in storage_paths],
    }
