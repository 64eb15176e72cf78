"""The exported OVA against what ESXi and VirtualBox document that they read (tests/helpers/ova.py), made here from
a small stand-in system disk: the OVA's making is what is tested, not the guest image (test_vm.py boots that)."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest
from helpers.ova import check_ova
from helpers.tools import require_tool

from bench.targets.vm.export import DATA_DISK_BYTES, VMWARE_OS_TYPE, make_ova
from bench.targets.vm.image import GuestImage

SYSTEM_BYTES = 64 << 20


@pytest.fixture(scope="module")
def small_ova(tmp_path_factory):
    """An OVA made by make_ova from a 64 MiB qcow2 in place of the guest image's system disk."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    folder = tmp_path_factory.mktemp("image")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(folder / "disk.qcow2"), str(SYSTEM_BYTES)], check=True)
    ova = folder / "pacsbench.ova"
    make_ova(GuestImage(folder), ova, vcpus=3, memory_mib=3072)
    return ova, qemu_img


def test_the_ova_holds_what_esxi_and_virtualbox_read(small_ova):
    ova, qemu_img = small_ova
    checked = check_ova(ova, qemu_img)
    assert checked.members == [
        "pacsbench-archive.ovf",
        "pacsbench-archive-disk1.vmdk",
        "pacsbench-archive-disk2.vmdk",
        "pacsbench-archive.mf",
    ]
    assert checked.disks == {"vmdisk1": SYSTEM_BYTES, "vmdisk2": DATA_DISK_BYTES}
    assert (checked.os_id, checked.vmware_os_type) == ("96", VMWARE_OS_TYPE)
    (cpu,), (memory,) = checked.items["3"], checked.items["4"]
    rasd = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
    assert cpu.findtext(f"{rasd}VirtualQuantity") == "3" and memory.findtext(f"{rasd}VirtualQuantity") == "3072"
    # The system disk is the IDE primary master (what the BIOS boots), the data disk the slave.
    assert {d.findtext(f"{rasd}HostResource"): d.findtext(f"{rasd}AddressOnParent") for d in checked.items["17"]} == {
        "ovf:/disk/vmdisk1": "0",
        "ovf:/disk/vmdisk2": "1",
    }
    assert ova.stat().st_size < 2 << 20  # both disks sparse: the blank data disk costs next to nothing
    assert not list(ova.parent.glob("*.part*")) and not list(ova.parent.glob("*.parts"))


def test_a_tampered_disk_fails_the_manifest_check(small_ova, tmp_path):
    """The check can fail: a VMDK changed after the manifest was written no longer matches its digest."""
    ova, _ = small_ova
    changed = tmp_path / "changed.ova"
    with tarfile.open(ova) as source, tarfile.open(changed, "w", format=tarfile.USTAR_FORMAT) as out:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith("disk2.vmdk"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    with pytest.raises(AssertionError, match="disk2.vmdk: manifest digest"):
        check_ova(changed)
