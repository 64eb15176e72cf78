"""Export the guest image for VirtualBox, VMware ESXi or another QEMU: OVA, VMDK or qcow2.

The OVA is a ustar tar of an OVF descriptor (first, as the format requires), two streamOptimized
VMDKs (the system disk, which boots by its own GRUB, and a blank data disk) and a manifest of
SHA256 digests. The virtual machine it describes uses the hardware both VirtualBox and ESXi offer
everywhere: an IDE controller (PIIX4) with the system disk as primary master and the data disk as
primary slave, and an E1000 network card; the guest's initrd also has AHCI, PVSCSI, LSI and VMXNET3
drivers for other choices. The data disk is small here: a deployer grows it to the scenario's size
before power-on (ESXi: ReconfigVM capacityInKB; VirtualBox: modifymedium --resize), and the guest
formats it when blank, or grows its file system when the disk is larger (server_under_test.guest).
Which sections and devices ESXi and VirtualBox read is in docs/targets.md.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import run
from bench.targets.vm.image import GuestImage, ensure_image, image_inputs, inputs_digest, vm_cache
from bench.targets.vm.tools import require

FORMATS = ("ova", "vmdk", "qcow2")
VM_NAME = "pacsbench-archive"
OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW = "http://www.vmware.com/schema/ovf"  # VMware's OVF extensions: vmw:osType
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
DEBIAN_64_OS_ID = "96"  # CIM operating system id for "Debian 64-bit" (what VirtualBox maps to Debian_64)
# ESXi reads the guest type from vmw:osType (a GuestOS identifier of the vSphere API); without it, the
# CIM id alone made the simulator's import an `otherGuest`.
VMWARE_OS_TYPE = "debian12_64Guest"
MIB = 1 << 20
DATA_DISK_BYTES = 1 << 30  # the exported data disk's capacity: blank, ~200 KB in the OVA; deployers resize it
DISKS = ("system", "data")  # the OVA's disks in order: file ids file1, file2; IDE primary master, slave


def export_image(fmt: str, out: Path, vcpus: int = 2, memory_mib: int = 2048, progress: bool = True) -> Path:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    if out.is_dir():
        raise UserError(f"{out} is a folder: give a file name, e.g. {out / (VM_NAME + '.' + fmt)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    image = ensure_image(progress=progress)
    if fmt == "qcow2":
        convert(image.disk, out, ["-O", "qcow2", "-c"])
    elif fmt == "vmdk":
        to_vmdk(image.disk, out)
    else:
        make_ova(image, out, vcpus, memory_mib)
    return out


def default_ova_path() -> Path:
    """Where the OVA of the current guest image is kept in the VM cache (named by the image's inputs)."""
    return vm_cache() / "export" / f"{VM_NAME}-{inputs_digest(image_inputs())}.ova"


def default_ova(progress: bool = True) -> Path:
    """The OVA of the current guest image (exported once per image, kept in the VM cache): what a hypervisor
    target (esxi, virtualbox) imports when its scenario names no `ova`."""
    path = default_ova_path()
    if not path.is_file():
        export_image("ova", path, progress=progress)
    return path


def convert(source: Path, out: Path, options: list[str]) -> None:
    temp = out.with_name(out.name + ".part")
    run([require("qemu-img"), "convert", *options, str(source), str(temp)], 1800, what="qemu-img convert")
    temp.replace(out)


def to_vmdk(source: Path, out: Path) -> None:
    convert(source, out, ["-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=ide"])


def virtual_size(disk: Path) -> int:
    info = json.loads(run([require("qemu-img"), "info", "--output=json", str(disk)], 60))
    return int(info["virtual-size"])


def blank_vmdk(out: Path, capacity: int) -> None:
    """A streamOptimized VMDK of `capacity` bytes holding nothing: the guest formats it at first boot."""
    temp = out.with_name(out.name + ".part")
    options = "subformat=streamOptimized,adapter_type=ide"
    run([require("qemu-img"), "create", "-q", "-f", "vmdk", "-o", options, str(temp), str(capacity)], 60)
    temp.replace(out)


def make_ova(image: GuestImage, out: Path, vcpus: int, memory_mib: int) -> None:
    folder = out.with_name(out.name + ".parts")
    folder.mkdir(exist_ok=True)
    try:
        system, data = (folder / f"{VM_NAME}-disk{n}.vmdk" for n in (1, 2))
        to_vmdk(image.disk, system)
        blank_vmdk(data, DATA_DISK_BYTES)
        disks = [
            OvfDisk(system.name, system.stat().st_size, virtual_size(image.disk)),
            OvfDisk(data.name, data.stat().st_size, DATA_DISK_BYTES),
        ]
        ovf = folder / f"{VM_NAME}.ovf"
        ovf.write_bytes(ovf_descriptor(disks, vcpus, memory_mib))
        manifest = folder / f"{VM_NAME}.mf"
        manifest.write_text("".join(f"SHA256({p.name})= {sha256(p)}\n" for p in (ovf, system, data)))
        temp = out.with_name(out.name + ".part")
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for path in (ovf, system, data, manifest):  # the descriptor must come first
                tar.add(path, arcname=path.name)
        temp.replace(out)
    finally:
        for path in folder.glob("*"):
            path.unlink()
        folder.rmdir()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _item(parent, instance: int, resource_type: int, name: str, **fields) -> ET.Element:
    item = ET.SubElement(parent, _q(OVF, "Item"))
    values = {"ElementName": name, "InstanceID": str(instance), "ResourceType": str(resource_type), **fields}
    for key in sorted(values):  # CIM requires the rasd elements in alphabetical order
        ET.SubElement(item, _q(RASD, key)).text = str(values[key])
    return item


@dataclass(frozen=True)
class OvfDisk:
    """One disk of the OVA: its file in the tar, the file's size and the disk's capacity (bytes)."""

    href: str
    file_bytes: int
    capacity: int


def ovf_descriptor(disks: list[OvfDisk], vcpus: int, memory_mib: int) -> bytes:
    """An OVF 1.0 envelope: one VM, the disks on one IDE controller, E1000 on a network the importer chooses."""
    for prefix, namespace in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD), ("vmw", VMW)):
        ET.register_namespace(prefix, namespace)
    envelope = ET.Element(_q(OVF, "Envelope"), {_q(OVF, "version"): "1.0"})
    references = ET.SubElement(envelope, _q(OVF, "References"))
    section = ET.SubElement(envelope, _q(OVF, "DiskSection"))
    ET.SubElement(section, _q(OVF, "Info")).text = "Virtual disks"
    for number, disk in enumerate(disks, 1):
        file = {_q(OVF, "id"): f"file{number}", _q(OVF, "href"): disk.href, _q(OVF, "size"): str(disk.file_bytes)}
        ET.SubElement(references, _q(OVF, "File"), file)
        ET.SubElement(
            section,
            _q(OVF, "Disk"),
            {
                _q(OVF, "diskId"): f"vmdisk{number}",
                _q(OVF, "fileRef"): f"file{number}",
                # In MiB with its unit: without a unit OVF means bytes, but govmomi's simulator reads KB (VirtualBox
                # writes units too); a capacity is rounded up to whole MiB.
                _q(OVF, "capacity"): str(-(-disk.capacity // MIB)),
                _q(OVF, "capacityAllocationUnits"): "byte * 2^20",
                _q(OVF, "format"): VMDK_FORMAT,
            },
        )
    networks = ET.SubElement(envelope, _q(OVF, "NetworkSection"))
    ET.SubElement(networks, _q(OVF, "Info")).text = "Logical networks"
    network = ET.SubElement(networks, _q(OVF, "Network"), {_q(OVF, "name"): "NAT"})
    ET.SubElement(network, _q(OVF, "Description")).text = "The network the archive is reached on"
    system = ET.SubElement(envelope, _q(OVF, "VirtualSystem"), {_q(OVF, "id"): VM_NAME})
    ET.SubElement(system, _q(OVF, "Info")).text = "pacsbench reference archive (Debian 12)"
    ET.SubElement(system, _q(OVF, "Name")).text = VM_NAME
    os_section = ET.SubElement(
        system, _q(OVF, "OperatingSystemSection"), {_q(OVF, "id"): DEBIAN_64_OS_ID, _q(VMW, "osType"): VMWARE_OS_TYPE}
    )
    ET.SubElement(os_section, _q(OVF, "Info")).text = "Guest operating system"
    ET.SubElement(os_section, _q(OVF, "Description")).text = "Debian 12 (64-bit)"
    hardware = ET.SubElement(system, _q(OVF, "VirtualHardwareSection"))
    ET.SubElement(hardware, _q(OVF, "Info")).text = "Virtual hardware"
    settings = ET.SubElement(hardware, _q(OVF, "System"))
    for key, value in (
        ("ElementName", "Virtual Hardware Family"),
        ("InstanceID", "0"),
        ("VirtualSystemIdentifier", VM_NAME),
        ("VirtualSystemType", "vmx-10 virtualbox-2.2"),
    ):
        ET.SubElement(settings, _q(VSSD, key)).text = value
    _item(hardware, 1, 3, f"{vcpus} virtual CPUs", AllocationUnits="hertz * 10^6", VirtualQuantity=vcpus)
    _item(hardware, 2, 4, f"{memory_mib} MB of memory", AllocationUnits="byte * 2^20", VirtualQuantity=memory_mib)
    _item(hardware, 3, 5, "IDE controller", Address=0, ResourceSubType="PIIX4")
    for number, name in enumerate(DISKS[: len(disks)], 1):
        _item(
            hardware,
            3 + number,
            17,
            f"{name} disk",
            AddressOnParent=number - 1,
            HostResource=f"ovf:/disk/vmdisk{number}",
            Parent=3,
        )
    nic = 4 + len(disks)
    _item(hardware, nic, 10, "ethernet0", AutomaticAllocation="true", Connection="NAT", ResourceSubType="E1000")
    ET.indent(envelope)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
