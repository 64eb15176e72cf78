"""Entry point inside a VM guest: settings from the kernel command line (or VMware guestinfo), the data disk,
then the archive.

    pacsbench.port=11112 pacsbench.aet=PACSBENCH pacsbench.fsync=1 pacsbench.max_pdu=0
    pacsbench.metrics_port=8080 pacsbench.dicomweb_port=8042 pacsbench.workers=0    (dicomweb_port=0: no DICOMweb)
    pacsbench.ip=10.0.2.15/24 pacsbench.gw=10.0.2.2   (static address; without it systemd-networkd asks DHCP)
    pacsbench.data=pbdata                             (wait for the disk with this label, keep the archive there)

A guest booted by its own boot loader (an exported OVA on ESXi or VirtualBox) has none of these: it
takes its address by DHCP, and its settings from the VMware guestinfo keys `guestinfo.pacsbench.<name>`
(the same names: guestinfo.pacsbench.port ...) when it runs on VMware, else its defaults (port 11112,
AE PACSBENCH, fsync on, metrics on 8080, DICOMweb on 8042). Its data disk is the disk labelled pbdata or, at first boot,
the blank second disk the OVA carries, formatted here; a disk grown by the deployer (to the scenario's
size) has its file system grown to fit before it is mounted.
Run as `python -m server_under_test.guest` by the guest's systemd unit.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from server_under_test.environment import detect_hypervisor, whole_disk

DATA_MOUNT = Path("/var/lib/pacsbench")
DEFAULT_DATA_LABEL = "pbdata"
DATA_WAIT_SECONDS = 60
# The settings a guest takes, by the names of the kernel command line and of the guestinfo keys.
SETTINGS = ("port", "aet", "fsync", "max_pdu", "metrics_port", "dicomweb_port", "workers", "ip", "gw")
# DICOMweb is on by default: a guest that is handed no settings (VirtualBox) serves it where the harness forwards.
DEFAULTS = {
    "port": "11112",
    "aet": "PACSBENCH",
    "fsync": "1",
    "max_pdu": str(1 << 20),
    "metrics_port": "8080",
    "dicomweb_port": "8042",
}
GUESTINFO_PREFIX = "guestinfo.pacsbench."
# Disks that are never the archive's: loop and RAM disks, CD-ROMs, floppies, device-mapper.
NOT_DATA_DISKS = ("loop", "ram", "sr", "fd", "dm-", "zram")
GROW_SLACK_BYTES = 16 << 20  # a disk this much larger than its file system is a grown disk


def kernel_settings(cmdline: str) -> dict[str, str]:
    settings = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key.startswith("pacsbench."):
            settings[key.removeprefix("pacsbench.")] = value
    return settings


def guestinfo_settings(rpctool: str = "vmware-rpctool") -> dict[str, str]:
    """The guestinfo.pacsbench.* keys the deployer set in the VM's extraConfig, read with open-vm-tools."""
    settings = {}
    for name in SETTINGS:
        try:
            answer = subprocess.run(
                [rpctool, f"info-get {GUESTINFO_PREFIX}{name}"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return settings
        if answer.returncode == 0 and answer.stdout.strip():  # a key that is not set: exit 1, "No value found"
            settings[name] = answer.stdout.strip()
    return settings


def on_vmware() -> bool:
    """Detected (systemd-detect-virt, else DMI), never assumed: guestinfo exists only under VMware's hypervisors."""
    return detect_hypervisor()["hypervisor"] == "vmware"


def guest_settings(cmdline: str, vmware: Callable[[], bool] = on_vmware) -> tuple[dict[str, str], str]:
    """The settings and where they came from: the kernel command line (QEMU), guestinfo (VMware), else defaults.

    `vmware` is asked only when the command line has none: a QEMU guest's boot does not wait for the detection."""
    settings = kernel_settings(cmdline)
    if settings:
        return settings, "kernel command line"
    if vmware() and shutil.which("vmware-rpctool"):
        return guestinfo_settings(), "VMware guestinfo"
    return {}, "defaults"


def first_ethernet() -> str:
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not names:
        raise SystemExit("guest: no network interface")
    return names[0]


def configure_static_address(address: str, gateway: str | None) -> None:
    device = first_ethernet()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "address", "replace", address, "dev", device], check=True)
    subprocess.run(["ip", "link", "set", device, "up"], check=True)
    if gateway:
        subprocess.run(["ip", "route", "replace", "default", "via", gateway], check=True)
    print(f"guest: {device} {address} gateway {gateway or 'none'}", flush=True)


def has_signature(device: Path) -> bool:
    """Whether the device holds a file system or partition table (blkid's low-level probe; exit 2: nothing)."""
    return subprocess.run(["blkid", "-p", str(device)], capture_output=True).returncode != 2


def blank_second_disk(sys_block: Path = Path("/sys/block")) -> Path | None:
    """The OVA's data disk at first boot: a whole disk that is not the system disk, without partitions or a
    file system. Only a disk with no signature at all is taken, so nothing anyone wrote is ever formatted."""
    system = whole_disk(Path("/"))
    for disk in sorted(sys_block.iterdir()):
        if disk.name.startswith(NOT_DATA_DISKS) or (system and disk.name == system.name):
            continue
        if any((disk / p).is_dir() and (disk / p / "partition").exists() for p in _names(disk)):
            continue
        device = Path("/dev") / disk.name
        if device.exists() and not has_signature(device):
            return device
    return None


def _names(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir()]
    except OSError:
        return []


def format_data_disk(device: Path, label: str = DEFAULT_DATA_LABEL) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(device)], check=True, capture_output=True)
    print(f"guest: formatted the blank disk {device} as ext4 labelled {label}", flush=True)


def file_system_bytes(device: Path) -> int:
    """The ext4 file system's size (block count x block size, from its superblock)."""
    header = subprocess.run(["dumpe2fs", "-h", str(device)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def device_bytes(device: Path) -> int:
    with device.open("rb") as f:
        return f.seek(0, 2)


def grow_file_system(device: Path) -> bool:
    """Grow the (unmounted) file system to its disk when the deployer made the disk larger; whether it did."""
    if device_bytes(device) - file_system_bytes(device) < GROW_SLACK_BYTES:
        return False
    checked = subprocess.run(["e2fsck", "-f", "-p", str(device)], capture_output=True, text=True)  # resize2fs wants it
    if checked.returncode >= 4:  # 1 and 2: errors corrected
        raise SystemExit(f"guest: e2fsck {device} failed ({checked.returncode}): {checked.stdout.strip()[-200:]}")
    subprocess.run(["resize2fs", str(device)], check=True, capture_output=True)
    print(f"guest: grew the file system on {device} to {file_system_bytes(device)} bytes", flush=True)
    return True


def find_data_disk(label: str, wait: float) -> Path | None:
    """The disk labelled `label` (waited for when the harness named it), else a blank second disk, formatted."""
    device = Path("/dev/disk/by-label") / label
    deadline = time.monotonic() + wait
    while not device.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if device.exists():
        return device
    if wait:
        raise SystemExit(f"guest: no disk labelled {label} within {wait:g} s")
    subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True)  # every disk probed first
    if device.exists():
        return device
    if blank := blank_second_disk():
        format_data_disk(blank, label)
        return blank
    return None


def mount_data_disk(label: str, wait: float) -> Path:
    """Mount the data disk on DATA_MOUNT; without one, keep the data on the system disk."""
    device = find_data_disk(label, wait)
    if device is None:
        return DATA_MOUNT / "data"
    grow_file_system(device)
    DATA_MOUNT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "noatime", str(device), str(DATA_MOUNT)], check=True)
    print(f"guest: data disk {device.resolve()} mounted on {DATA_MOUNT}", flush=True)
    return DATA_MOUNT / "data"


def archive_config(settings: dict[str, str], data: Path) -> str:
    """The archive's configuration file (server_under_test.config) from the guest's settings over its defaults."""
    settings = {**DEFAULTS, **settings}
    dicomweb_port = int(settings["dicomweb_port"])
    return "\n".join(
        [
            f'ae_title = "{settings["aet"]}"',
            'host = "0.0.0.0"',
            f"port = {int(settings['port'])}",
            f'data = "{data}"',
            f"workers = {int(settings.get('workers', 0))}",
            f"max_pdu = {int(settings['max_pdu'])}",
            f"fsync = {'true' if settings['fsync'] == '1' else 'false'}",
            "[metrics]",
            'host = "0.0.0.0"',
            f"port = {int(settings['metrics_port'])}",
            # on the DICOM host (0.0.0.0); 0: no DICOMweb (the table left out)
            *(["[dicomweb]", f"port = {dicomweb_port}"] if dicomweb_port else []),
            "",
        ]
    )


def main() -> int:
    settings, source = guest_settings(Path("/proc/cmdline").read_text())
    print(f"guest: settings from the {source}: {settings or DEFAULTS}", flush=True)
    if settings.get("ip"):
        configure_static_address(settings["ip"], settings.get("gw"))
    label = settings.get("data", "")
    data = mount_data_disk(label or DEFAULT_DATA_LABEL, DATA_WAIT_SECONDS if label else 0)
    config = Path("/run/pacsbench/archive.toml")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(archive_config(settings, data))
    from server_under_test.server import main as serve

    return serve(["--config", str(config)], prog="server_under_test.guest")


if __name__ == "__main__":
    sys.exit(main())
