"""An OVA checked against what ESXi and VirtualBox document that they read (docs/targets.md, "One OVA for both").

The descriptor is parsed with ElementTree and each requirement checked by meaning, never by comparing
bytes: the archive's layout (OVF 1.0 section 5: a ustar tar, the descriptor first, then the files it
references, a manifest of digests), the namespaces, References, DiskSection, NetworkSection, a
VirtualSystem with its OperatingSystemSection (the CIM id VirtualBox maps, VMware's vmw:osType) and
VirtualHardwareSection (CPU 3, memory 4, an IDE controller 5, disks 17 on it, ethernet 10).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW = "http://www.vmware.com/schema/ovf"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def o(name: str) -> str:
    return f"{{{OVF}}}{name}"


def r(name: str) -> str:
    return f"{{{RASD}}}{name}"


@dataclass
class CheckedOva:
    """What the checks found, for a test's own assertions."""

    members: list[str]
    namespaces: dict[str, str]
    disks: dict[str, int]  # diskId -> capacity
    items: dict[str, list[ET.Element]]  # ResourceType -> items
    os_id: str
    vmware_os_type: str


def check_ova(path: Path, qemu_img: str | None = None) -> CheckedOva:
    """Every documented requirement, asserted; with qemu-img, each VMDK is streamOptimized of the stated capacity."""
    with path.open("rb") as f:
        assert f.read(512)[257:263] == b"ustar\x00", "an OVA is a POSIX ustar archive"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    names = [m.name for m in members]
    assert all(m.isfile() for m in members), "only regular files in an OVA"
    assert names[0].endswith(".ovf"), "the descriptor comes first"
    descriptor = contents[names[0]]
    namespaces = dict(ns for _, ns in ET.iterparse(io.BytesIO(descriptor), events=("start-ns",)))
    envelope = ET.fromstring(descriptor)
    assert envelope.tag == o("Envelope") and envelope.get(o("version")) in ("1.0", "2.0")
    for prefix, uri in (("ovf", OVF), ("rasd", RASD), ("vssd", VSSD), ("vmw", VMW)):
        assert namespaces.get(prefix) == uri, f"namespace {prefix}"

    files = {f.get(o("id")): f for f in envelope.findall(f"{o('References')}/{o('File')}")}
    for file in files.values():
        href = file.get(o("href"))
        assert href in contents, f"{href} is referenced but not in the OVA"
        assert int(file.get(o("size"))) == len(contents[href]), f"{href}: ovf:size"
    assert names.index(names[0]) < min(names.index(f.get(o("href"))) for f in files.values())

    disks = {}
    for disk in envelope.findall(f"{o('DiskSection')}/{o('Disk')}"):
        assert disk.get(o("fileRef")) in files and disk.get(o("format")) == STREAM_OPTIMIZED
        assert disk.get(o("capacityAllocationUnits")) == "byte * 2^20"  # OVF 1.0: units as a DMTF programmatic unit
        disks[disk.get(o("diskId"))] = int(disk.get(o("capacity"))) << 20
        if qemu_img:
            check_vmdk(contents[files[disk.get(o("fileRef"))].get(o("href"))], disks[disk.get(o("diskId"))], qemu_img)
    assert envelope.find(f"{o('DiskSection')}/{o('Info')}") is not None
    networks = {n.get(o("name")) for n in envelope.findall(f"{o('NetworkSection')}/{o('Network')}")}
    assert networks and envelope.find(f"{o('NetworkSection')}/{o('Info')}") is not None

    systems = envelope.findall(o("VirtualSystem"))
    assert len(systems) == 1 and systems[0].get(o("id")), "one VirtualSystem (VBoxManage import --vsys 0)"
    system = systems[0]
    os_section = system.find(o("OperatingSystemSection"))
    assert os_section is not None and os_section.find(o("Info")) is not None
    hardware = system.find(o("VirtualHardwareSection"))
    assert hardware is not None and hardware.find(o("Info")) is not None
    family = hardware.findtext(f"{o('System')}/{{{VSSD}}}VirtualSystemType") or ""
    assert re.search(r"\bvmx-\d+\b", family) and re.search(r"\bvirtualbox-", family), family

    items: dict[str, list[ET.Element]] = {}
    ids = []
    for item in hardware.findall(o("Item")):
        fields = [child.tag for child in item]
        assert all(tag.startswith(f"{{{RASD}}}") for tag in fields)
        assert fields == sorted(fields), "rasd elements in CIM's (alphabetical) order"
        ids.append(item.findtext(r("InstanceID")))
        items.setdefault(item.findtext(r("ResourceType")), []).append(item)
    assert len(ids) == len(set(ids)), "unique InstanceIDs"
    (cpu,) = items["3"]
    (memory,) = items["4"]
    assert int(cpu.findtext(r("VirtualQuantity"))) >= 1
    assert memory.findtext(r("AllocationUnits")) == "byte * 2^20" and int(memory.findtext(r("VirtualQuantity"))) > 0
    controllers = {c.findtext(r("InstanceID")): c for c in items["5"]}
    assert all(c.findtext(r("ResourceSubType")) == "PIIX4" for c in controllers.values())
    slots = set()
    for disk in items["17"]:
        assert disk.findtext(r("HostResource")).removeprefix("ovf:/disk/") in disks
        assert disk.findtext(r("HostResource")).startswith("ovf:/disk/")
        assert disk.findtext(r("Parent")) in controllers
        slots.add((disk.findtext(r("Parent")), disk.findtext(r("AddressOnParent"))))
    assert len(slots) == len(items["17"]) == len(disks), "each disk once, each in its own slot"
    assert all(int(address) in (0, 1) for _, address in slots), "an IDE channel has a master (0) and a slave (1)"
    for nic in items["10"]:
        assert nic.findtext(r("Connection")) in networks and nic.findtext(r("ResourceSubType")) == "E1000"

    manifest = contents[next(n for n in names if n.endswith(".mf"))].decode()
    digests = dict(re.findall(r"^SHA256\((.+)\)= ([0-9a-f]{64})$", manifest, re.MULTILINE))
    assert set(digests) == set(contents) - {n for n in names if n.endswith(".mf")}, "the manifest covers every file"
    for name, digest in digests.items():
        assert hashlib.sha256(contents[name]).hexdigest() == digest, f"{name}: manifest digest"
    return CheckedOva(
        names, namespaces, disks, items, os_section.get(o("id")), os_section.get(f"{{{VMW}}}osType") or ""
    )


def check_vmdk(data: bytes, capacity: int, qemu_img: str) -> None:
    with tempfile.NamedTemporaryFile(suffix=".vmdk") as vmdk:
        vmdk.write(data)
        vmdk.flush()
        answer = subprocess.run(
            [qemu_img, "info", "--output=json", "-f", "vmdk", vmdk.name], capture_output=True, check=True, timeout=60
        )
    info = json.loads(answer.stdout)
    assert info["virtual-size"] <= capacity < info["virtual-size"] + (1 << 20)  # the capacity, rounded up to MiB
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
