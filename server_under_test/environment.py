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
    "QEMU": "qemu",
    "VMware, Inc.": "vmware",
    "innotek GmbH": "oracle",
    "Oracle Corporation": "oracle",
    "Microsoft Corporation": "microsoft",
    "Xen": "xen",
    "Amazon EC2": "amazon",
    "Google": "google",
    "Parallels Software International Inc.": "parallels",
    "Red Hat": "kvm",
}


def read_text(path: str) -> str:
    """A /proc or /sys file's text, stripped; "" when absent or unreadable (a fact is best effort)."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""


def _systemd_detect_virt(layer: str) -> str | None:
    """systemd-detect-virt's answer for one layer ("vm" or "container"): a name, "none", or None without the tool."""
    tool = shutil.which("systemd-detect-virt")
    if not tool:
        return None
    try:
        result = subprocess.run([tool, f"--{layer}"], capture_output=True, text=True, timeout=5)
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
    """The hypervisor this host runs on ("none" on bare metal), the container it runs in, and how each was told.

    The two layers apart: a container on a KVM guest is a KVM guest, whatever plain
    systemd-detect-virt (which names the innermost layer) says."""
    vendor, product = dmi_vendor_and_product()
    systemd = _systemd_detect_virt("vm")
    container = _systemd_detect_virt("container")
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
    innermost = container if container and container != "none" else systemd
    return {
        "hypervisor": name,
        "detected_by": how,
        "container": container or "unknown",
        "systemd_detect_virt": innermost,
        "dmi_sys_vendor": vendor,
        "dmi_product_name": product,
        "cpu_hypervisor_flag": flag,
    }


def _mount_of(path: Path) -> tuple[str, str]:
    """The mount point holding `path` (the nearest folder up that is one) and its file system type."""
    mount = next(folder for folder in (path, *path.parents) if os.path.ismount(folder))
    fs_type = ""
    for line in read_text("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == str(mount):
            fs_type = parts[2]  # the last mount on a folder is the one in use
    return str(mount), fs_type


def file_system(path: Path) -> str:
    """The type of the file system holding `path` ("ext4", "xfs", "tmpfs"...; "" when /proc/mounts does not say)."""
    return _mount_of(path.resolve())[1]


def block_device(path: Path) -> Path | None:
    """The block device holding `path`, as its sysfs folder; None on a virtual file system (tmpfs, overlay)."""
    dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    return node.resolve() if node.exists() else None


def whole_disk(path: Path) -> Path | None:
    """The disk holding `path`, as its sysfs folder (named as /proc/diskstats names it); None on a
    virtual file system. A partition's I/O queue, rotational flag and model are its disk's."""
    device = block_device(path)
    if device is None:
        return None
    return device.parent if (device / "partition").exists() else device


def ext4_journal(device: Path | None) -> bool | None:
    """Does the ext4 file system on `device` (a sysfs block device folder) keep a journal? None: not known.

    Why it matters to a benchmark: without one, crash consistency rests on fsck, and allocating an inode checks
    every inode freed in the last one to five minutes, so file creation right after mass deletion costs up to
    ~1 ms of CPU (measured here)."""
    if device is None:
        return None
    task = read_text(f"/sys/fs/ext4/{device.name}/journal_task")
    return None if not task else task != "<none>"


def storage_device(path: Path) -> dict:
    """The block device, rotational flag and file system holding `path` (best effort)."""
    path = path.resolve()
    device, disk = block_device(path), whole_disk(path)
    mount, fs_type = _mount_of(path)
    usage = shutil.disk_usage(path)
    return {
        "path": str(path),
        "device": device.name if device else "",
        "rotational": _disk_fact(disk, "queue/rotational"),
        "model": _disk_fact(disk, "device/model"),
        "mount": mount,
        "fs_type": fs_type,
        "fs_journal": ext4_journal(device) if fs_type == "ext4" else None,
        "fs_total_bytes": usage.total,
        "fs_free_bytes": usage.free,
    }


def _disk_fact(disk: Path | None, name: str) -> str | None:
    return (read_text(str(disk / name)) or None) if disk else None


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
