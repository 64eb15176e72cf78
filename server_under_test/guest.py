"""Entry point inside a VM guest: settings from the kernel command line, then the archive.

    pacsbench.port=11112 pacsbench.aet=PACSBENCH pacsbench.fsync=1 pacsbench.max_pdu=0
    pacsbench.metrics_port=8080 pacsbench.workers=0
    pacsbench.ip=10.0.2.15/24 pacsbench.gw=10.0.2.2   (static address; without it systemd-networkd asks DHCP)
    pacsbench.data=pbdata                             (wait for the disk with this label, keep the archive there)

A guest booted by its own boot loader (an exported VM) has none of these: DHCP, port 11112,
AE PACSBENCH, data on the system disk unless a disk labelled pbdata is attached.
Run as `python -m server_under_test.guest` by the guest's systemd unit.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DATA_MOUNT = Path("/var/lib/pacsbench")
DEFAULT_DATA_LABEL = "pbdata"
DATA_WAIT_SECONDS = 60


def kernel_settings(cmdline: str) -> dict[str, str]:
    settings = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key.startswith("pacsbench."):
            settings[key.removeprefix("pacsbench.")] = value
    return settings


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


def mount_data_disk(label: str, wait: float) -> Path:
    """Mount the disk labelled `label` on DATA_MOUNT; without one, keep the data on the system disk."""
    device = Path("/dev/disk/by-label") / label
    deadline = time.monotonic() + wait
    while not device.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not device.exists():
        if wait:
            raise SystemExit(f"guest: no disk labelled {label} within {wait:g} s")
        return DATA_MOUNT / "data"
    DATA_MOUNT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "noatime", str(device), str(DATA_MOUNT)], check=True)
    print(f"guest: data disk {device.resolve()} mounted on {DATA_MOUNT}", flush=True)
    return DATA_MOUNT / "data"


def archive_config(settings: dict[str, str], data: Path) -> str:
    return "\n".join(
        [
            f'ae_title = "{settings.get("aet", "PACSBENCH")}"',
            'host = "0.0.0.0"',
            f"port = {int(settings.get('port', 11112))}",
            f'data = "{data}"',
            f"workers = {int(settings.get('workers', 0))}",
            f"max_pdu = {int(settings.get('max_pdu', 1 << 20))}",
            f"fsync = {'true' if settings.get('fsync', '1') == '1' else 'false'}",
            "[metrics]",
            'host = "0.0.0.0"',
            f"port = {int(settings.get('metrics_port', 8080))}",
            "",
        ]
    )


def main() -> int:
    settings = kernel_settings(Path("/proc/cmdline").read_text())
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
