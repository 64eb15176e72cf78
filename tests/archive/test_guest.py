"""The guest entry point's choices, outside a guest: where its settings come from (kernel command line, VMware
guestinfo, defaults) and its data disk (formatted when blank, its file system grown when the disk grew), on
image files with e2fsprogs' real tools (tests/targets/test_vm.py boots the real thing)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from server_under_test.config import load_config
from server_under_test.guest import (
    archive_config,
    file_system_bytes,
    format_data_disk,
    grow_file_system,
    guest_settings,
    guestinfo_settings,
    has_signature,
)

# A stand-in for open-vm-tools' vmware-rpctool (it talks to VMware's hypervisor, absent here): `info-get KEY`
# prints the value and exits 0, or prints "No value found" and exits 1, as the real tool does.
RPCTOOL = """#!/bin/sh
case "$1" in
  "info-get guestinfo.pacsbench.port") echo 104 ;;
  "info-get guestinfo.pacsbench.aet") echo ESXARCH ;;
  "info-get guestinfo.pacsbench.fsync") echo 0 ;;
  *) echo "No value found" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def e2fsprogs():
    for tool in ("mkfs.ext4", "dumpe2fs", "e2fsck", "resize2fs", "blkid"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (Debian: e2fsprogs, util-linux)")


def test_settings_come_from_the_command_line_then_guestinfo_on_vmware_else_defaults(tmp_path, monkeypatch):
    rpctool = tmp_path / "vmware-rpctool"
    rpctool.write_text(RPCTOOL)
    rpctool.chmod(0o755)
    assert guestinfo_settings(str(rpctool)) == {"port": "104", "aet": "ESXARCH", "fsync": "0"}
    assert guest_settings("root=LABEL=pbroot pacsbench.port=5", vmware=lambda: True) == (
        {"port": "5"},
        "kernel command line",
    )
    assert guest_settings("root=LABEL=pbroot", vmware=lambda: False) == ({}, "defaults")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    settings, source = guest_settings("root=LABEL=pbroot", vmware=lambda: True)
    assert source == "VMware guestinfo"
    config = tmp_path / "archive.toml"
    config.write_text(archive_config(settings, tmp_path / "data"))
    loaded = load_config(config)
    assert (loaded.port, loaded.ae_title, loaded.fsync, loaded.metrics.port) == (104, "ESXARCH", False, 8080)


def test_a_blank_data_disk_is_formatted_and_a_grown_one_grows(e2fsprogs, tmp_path):
    disk = tmp_path / "data.img"
    with disk.open("wb") as f:
        f.truncate(64 << 20)
    assert not has_signature(disk)
    format_data_disk(disk)
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(disk)], capture_output=True, text=True)
    assert has_signature(disk) and label.stdout.strip() == "pbdata"
    assert file_system_bytes(disk) == 64 << 20 and grow_file_system(disk) is False
    os.truncate(disk, 256 << 20)  # what ReconfigVM capacityInKB or modifymedium --resize does to the disk
    assert grow_file_system(disk) is True and file_system_bytes(disk) == 256 << 20
    check = subprocess.run(["e2fsck", "-f", "-n", str(disk)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
