"""Export the guest image for VirtualBox, VMware ESXi or another QEMU: OVA, VMDK or qcow2.

The OVA is a ustar tar of an OVF descriptor (first, as the format requires), a streamOptimized
VMDK and a manifest of SHA256 digests. The virtual machine it describes uses the hardware both
VirtualBox and ESXi offer everywhere: an IDE controller (PIIX4) and an E1000 network card; the
guest's initrd also has AHCI, PVSCSI, LSI and VMXNET3 drivers for other choices.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import run
from bench.targets.vm.image import GuestImage, ensure_image
from bench.targets.vm.tools import require

FORMATS = ("ova", "vmdk", "qcow2")
VM_NAME = "pacsbench-archive"
OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
DEBIAN_64_OS_ID = "96"  # CIM operating system id for "Debian 64-bit"


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


def convert(source: Path, out: Path, options: list[str]) -> None:
    temp = out.with_name(out.name + ".part")
    run([require("qemu-img"), "convert", *options, str(source), str(temp)], 1800, what="qemu-img convert")
    temp.replace(out)


def to_vmdk(source: Path, out: Path) -> None:
    convert(source, out, ["-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=ide"])


def virtual_size(disk: Path) -> int:
    info = json.loads(run([require("qemu-img"), "info", "--output=json", str(disk)], 60))
    return int(info["virtual-size"])


def make_ova(image: GuestImage, out: Path, vcpus: int, memory_mib: int) -> None:
    folder = out.with_name(out.name + ".parts")
    folder.mkdir(exist_ok=True)
    try:
        vmdk = folder / f"{VM_NAME}-disk1.vmdk"
        to_vmdk(image.disk, vmdk)
        ovf = folder / f"{VM_NAME}.ovf"
        ovf.write_bytes(ovf_descriptor(vmdk.name, vmdk.stat().st_size, virtual_size(image.disk), vcpus, memory_mib))
        manifest = folder / f"{VM_NAME}.mf"
        manifest.write_text("".join(f"SHA256({p.name})= {sha256(p)}\n" for p in (ovf, vmdk)))
        temp = out.with_name(out.name + ".part")
        with tarfile.open(temp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for path in (ovf, vmdk, manifest):  # the descriptor must come first
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


def ovf_descriptor(vmdk_name: str, vmdk_bytes: int, capacity: int, vcpus: int, memory_mib: int) -> bytes:
    """An OVF 1.x envelope: one VM, IDE disk, E1000 on a NAT/bridged network the importer chooses."""
    for prefix, namespace in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD)):
        ET.register_namespace(prefix, namespace)
    envelope = ET.Element(_q(OVF, "Envelope"), {_q(OVF, "version"): "1.0"})
    references = ET.SubElement(envelope, _q(OVF, "References"))
    ET.SubElement(
        references,
        _q(OVF, "File"),
        {_q(OVF, "id"): "file1", _q(OVF, "href"): vmdk_name, _q(OVF, "size"): str(vmdk_bytes)},
    )
    disks = ET.SubElement(envelope, _q(OVF, "DiskSection"))
    ET.SubElement(disks, _q(OVF, "Info")).text = "Virtual disks"
    ET.SubElement(
        disks,
        _q(OVF, "Disk"),
        {
            _q(OVF, "diskId"): "vmdisk1",
            _q(OVF, "fileRef"): "file1",
            _q(OVF, "capacity"): str(capacity),
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
    os_section = ET.SubElement(system, _q(OVF, "OperatingSystemSection"), {_q(OVF, "id"): DEBIAN_64_OS_ID})
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
    _item(hardware, 4, 17, "disk1", AddressOnParent=0, HostResource="ovf:/disk/vmdisk1", Parent=3)
    _item(hardware, 5, 10, "ethernet0", AutomaticAllocation="true", Connection="NAT", ResourceSubType="E1000")
    ET.indent(envelope)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
