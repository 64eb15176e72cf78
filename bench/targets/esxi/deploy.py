"""Deploy an OVA: the OVF import spec, ImportVApp, the lease's disk uploads with a progress bar, the lease aborted
on any failure.

The OVA is a tar whose first member is the OVF descriptor; each file the import spec asks for
is streamed from the tar to the lease's device URL (PUT for a disk the host creates, else POST,
as VMware's own OVF tool does), while the lease is told the progress so it does not time out.
"""

from __future__ import annotations

import http.client
import re
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bench.common.errors import UserError
from bench.targets.esxi.connection import Placement, Session, fault_text, vim
from bench.targets.esxi.machine import remove

LEASE_READY_TIMEOUT = 300.0
LEASE_PROGRESS_EVERY = 5.0  # seconds; a lease left without progress for minutes times out on the host
CHUNK = 1 << 20


@dataclass
class Ova:
    """An OVA on disk: its descriptor text and its members by name."""

    path: Path
    descriptor: str
    members: dict[str, tarfile.TarInfo]


def read_ova(path: Path) -> Ova:
    if not path.is_file():
        raise UserError(
            f"esxi target: no OVA at {path} (write one with `pacsbench vm export --format ova --out {path}`)"
        )
    try:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            ovf = next((m for m in members.values() if m.name.endswith(".ovf")), None)
            if ovf is None:
                raise UserError(f"esxi target: {path} holds no OVF descriptor: not an OVA")
            descriptor = tar.extractfile(ovf).read().decode("utf-8")
    except (tarfile.TarError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"esxi target: {path} is not an OVA ({exc})") from None
    return Ova(path, descriptor, members)


def import_spec(session: Session, ova: Ova, place: Placement, name: str):
    """The host's import spec for the descriptor, or a one-line error with the host's first complaint."""
    v = vim()
    params = v.OvfManager.CreateImportSpecParams(
        entityName=name,
        diskProvisioning="thin",
        networkMapping=[
            v.OvfManager.NetworkMapping(name=network, network=place.network) for network in ovf_networks(ova)
        ],
    )
    result = session.content.ovfManager.CreateImportSpec(ova.descriptor, place.pool, place.datastore, params)
    if result.error:
        raise UserError(f"esxi target: the host refuses {ova.path.name}: {fault_text(result.error[0])}")
    config = result.importSpec.configSpec
    # The OVA names a type per hypervisor ("vmx-10 virtualbox-2.2"): ESXi takes the vmx-NN among them, and so
    # must the spec handed back (the simulator copies the whole list and then refuses it).
    if config.version and " " in config.version:
        config.version = next((word for word in config.version.split() if re.fullmatch(r"vmx-\d+", word)), None)
    return result


def ovf_networks(ova: Ova) -> list[str]:
    """The logical network names of the descriptor's NetworkSection (each is mapped to the scenario's network)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(ova.descriptor)
    return [
        value
        for element in root.iter()
        if element.tag.endswith("}Network")
        for key, value in element.attrib.items()
        if key.endswith("}name")
    ]


def deploy(session: Session, ova: Ova, place: Placement, name: str, note: str, progress: bool = True):
    """ImportVApp and upload the disks; the VM (powered off). Any failure aborts the lease and raises.

    The annotation `note` goes in with the import: a VM the host made before a harness was killed is found."""
    spec = import_spec(session, ova, place, name)
    spec.importSpec.configSpec.annotation = note
    folder = place.datacenter.vmFolder
    try:
        lease = place.pool.ImportVApp(spec.importSpec, folder, place.host)
    except Exception as exc:  # noqa: BLE001 (a vim fault: the host said no)
        raise UserError(f"esxi target: import of {ova.path.name} refused: {fault_text(exc)}") from None
    vm = None
    try:
        wait_ready(lease)
        vm = lease.info.entity  # read before HttpNfcLeaseComplete: the simulator deletes the lease there
        upload(session, ova, spec.fileItem, lease, progress)
        lease.HttpNfcLeaseComplete()
        return vm
    except BaseException as exc:  # KeyboardInterrupt (SIGTERM) too: the host must drop the half-made VM
        abort(lease, exc)
        if vm is not None:  # ESXi removes it with the aborted lease; the simulator does not: make sure
            remove(vm, quiet=True)
        if isinstance(exc, Exception) and not isinstance(exc, UserError):
            raise UserError(f"esxi target: deploying {ova.path.name} failed: {fault_text(exc)}") from None
        raise


def wait_ready(lease) -> None:
    v = vim()
    deadline = time.monotonic() + LEASE_READY_TIMEOUT
    while lease.state == v.HttpNfcLease.State.initializing:
        if time.monotonic() > deadline:
            raise UserError(f"esxi target: the import lease was not ready within {LEASE_READY_TIMEOUT:g} s")
        time.sleep(0.2)
    if lease.state == v.HttpNfcLease.State.error:
        raise UserError(f"esxi target: the import lease failed: {fault_text(lease.error)}")


def abort(lease, exc: BaseException) -> None:
    v = vim()
    try:
        if lease.state in (v.HttpNfcLease.State.ready, v.HttpNfcLease.State.initializing):
            lease.HttpNfcLeaseAbort(v.fault.SystemError(reason=f"pacsbench: {type(exc).__name__}"))
    except Exception:  # noqa: BLE001 (the lease is gone already: nothing left to abort)
        pass


class LeaseProgress:
    """Tells the lease how far the upload is, every few seconds, from a thread of its own."""

    def __init__(self, lease, total: int):
        self.lease, self.total, self.done = lease, max(total, 1), 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lease-progress", daemon=True)

    def _run(self) -> None:
        while not self.stopping.wait(LEASE_PROGRESS_EVERY):
            try:
                self.lease.HttpNfcLeaseProgress(min(99, int(100 * self.done / self.total)))
            except Exception:  # noqa: BLE001 (the upload's own error says what went wrong)
                return

    def __enter__(self) -> LeaseProgress:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopping.set()
        self.thread.join(LEASE_PROGRESS_EVERY)


def upload(session: Session, ova: Ova, file_items, lease, progress: bool) -> None:
    """Stream each file the import spec names from the OVA to its device URL."""
    urls = {url.importKey: url for url in lease.info.deviceUrl}
    items = [(item, urls.get(item.deviceId)) for item in file_items or []]
    missing = [item.path for item, url in items if url is None or item.path not in ova.members]
    if missing:
        raise UserError(f"esxi target: {ova.path.name} lacks what the host asks for: {', '.join(missing)}")
    total = sum(ova.members[item.path].size for item, _ in items)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="esxi: upload", disable=not progress, leave=False)
    with bar, LeaseProgress(lease, total) as told, tarfile.open(ova.path) as tar:
        for item, url in items:
            member = ova.members[item.path]
            send(session, url.url, tar.extractfile(member), member.size, "PUT" if item.create else "POST", bar, told)


def send(session: Session, url: str, source, size: int, method: str, bar, told: LeaseProgress) -> None:
    """One file to one device URL, over the session's TLS settings."""
    from bench.targets.esxi.connection import ssl_context

    parts = urllib.parse.urlsplit(url)
    # "*" stands for the server the session talks to (an ESXi host answers for itself)
    spec = session.spec
    host, port = (spec.host, spec.api_port) if parts.hostname in ("*", None) else (parts.hostname, parts.port or 443)
    context = ssl_context(spec)  # the session's trust: system CAs, ca_file, the pinned certificate, or none
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=120)
    try:
        connection.putrequest(method, parts.path + (f"?{parts.query}" if parts.query else ""))
        connection.putheader("Content-Type", "application/x-vnd.vmware-streamVmdk")
        connection.putheader("Content-Length", str(size))
        connection.putheader("Cookie", session.si._stub.cookie)
        connection.endheaders()
        while chunk := source.read(CHUNK):
            connection.send(chunk)
            bar.update(len(chunk))
            told.done += len(chunk)
        answer = connection.getresponse()
        answer.read()
        if answer.status >= 300:
            raise UserError(f"esxi target: the disk upload got HTTP {answer.status} {answer.reason}")
    finally:
        connection.close()
