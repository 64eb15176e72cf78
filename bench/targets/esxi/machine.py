"""One deployed VM: the budget and the archive's settings before power-on, power, the address VMware Tools reports,
power off and destroy; and the VMs a killed harness left, found by their annotation.

Every VM pacsbench deploys carries the annotation `pacsbench run <run-id>` and, on the next
line, the harness that made it (host, pid and the pid's start time): a VM whose harness ran on
this host and is gone is a leftover, removed by the next run against the host and by
`pacsbench vm clean --target SCENARIO`.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time

import psutil

from bench.common.errors import UserError
from bench.targets.esxi.connection import Session, all_of, fault_text, vim

TASK_TIMEOUT = 600.0
ANNOTATION = re.compile(
    r"^pacsbench run (?P<run>\S+)\n(?P<how>harness|kept by harness) (?P<host>\S+)"
    r" pid (?P<pid>\d+) started (?P<t>[\d.]+)"
)
GUESTINFO = "guestinfo.pacsbench."


def annotation(run_id: str) -> str:
    """What a VM of run `run_id` carries: the run, and the harness process (host, pid, start time)."""
    started = psutil.Process(os.getpid()).create_time()
    return f"pacsbench run {run_id}\nharness {socket.gethostname()} pid {os.getpid()} started {started:.2f}"


def mark_kept(vm) -> None:
    """keep = true: the annotation says so, and the next run leaves the VM alone (`vm clean` removes it)."""
    note = vm.config.annotation or ""
    if note.startswith("pacsbench run ") and "\nharness " in note:
        wait_for(
            vm.ReconfigVM_Task(vim().vm.ConfigSpec(annotation=note.replace("\nharness ", "\nkept by harness ", 1))),
            "marking the VM kept",
        )


def wait_for(task, what: str, timeout: float = TASK_TIMEOUT):
    """A vSphere task's result; a one-line error naming `what` when it fails or takes too long."""
    v = vim()
    deadline = time.monotonic() + timeout
    while task.info.state in (v.TaskInfo.State.queued, v.TaskInfo.State.running):
        if time.monotonic() > deadline:
            raise UserError(f"esxi target: {what} did not finish within {timeout:g} s")
        time.sleep(0.2)
    if task.info.state == v.TaskInfo.State.error:
        raise UserError(f"esxi target: {what} failed: {fault_text(task.info.error)}")
    return task.info.result


def disks(vm) -> list:
    v = vim()
    return [d for d in vm.config.hardware.device if isinstance(d, v.vm.device.VirtualDisk)]


def reconfigure(vm, cpus: int, memory_mib: int, settings: dict[str, str], data_gib: int) -> dict:
    """CPUs, memory (fully reserved, so ballooning and host swapping cannot blur a figure), the guest's settings
    as guestinfo keys and the data disk's size: all before power-on (ESXi changes CPUs of a
    running VM only with hot-add). What was set, for run.json."""
    v = vim()
    spec = v.vm.ConfigSpec(
        numCPUs=cpus,
        memoryMB=memory_mib,
        memoryAllocation=v.ResourceAllocationInfo(reservation=memory_mib),
        memoryReservationLockedToMax=True,
        extraConfig=[v.option.OptionValue(key=GUESTINFO + key, value=value) for key, value in settings.items()],
    )
    data = data_disk_change(vm, data_gib)
    if data is not None:
        spec.deviceChange = [data]
    wait_for(vm.ReconfigVM_Task(spec), "setting the VM's CPUs, memory and settings")
    return {
        "memory_reservation_mib": memory_mib,
        "memory_reservation_locked_to_max": True,
        "guestinfo": {GUESTINFO + key: value for key, value in settings.items()},
        "data_disk": f"{data_gib} GiB (the OVA's second disk)" if data is not None else None,
    }


def data_disk_change(vm, data_gib: int):
    """The OVA's second disk (the archive's data disk) grown to the scenario's size; None when the OVA has none."""
    v = vim()
    found = disks(vm)
    if len(found) < 2:
        return None
    disk = found[1]
    wanted_kb = data_gib << 20
    if disk.capacityInKB > wanted_kb:
        raise UserError(
            f"esxi target: the OVA's data disk is {disk.capacityInKB >> 20} GiB, more than data_disk_gib = {data_gib} "
            "(a disk cannot shrink): raise data_disk_gib"
        )
    disk.capacityInKB = wanted_kb
    disk.capacityInBytes = wanted_kb << 10
    return v.vm.device.VirtualDeviceSpec(operation=v.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)


def power_on(vm) -> None:
    wait_for(vm.PowerOnVM_Task(), "powering the VM on")


def guest_address(vm, timeout: float) -> str:
    """The VM's IPv4 address as VMware Tools reports it; the timeout's line names the tools' state seen."""
    deadline = time.monotonic() + timeout
    while True:
        guest = vm.guest
        addresses = [guest.ipAddress] if guest and guest.ipAddress else []
        for nic in (guest.net if guest else None) or []:
            addresses += list(nic.ipAddress or [])
        ipv4 = [a for a in addresses if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", a) and not a.startswith("169.254.")]
        if ipv4:
            return ipv4[0]
        if time.monotonic() > deadline:
            state = f"{guest.toolsRunningStatus}, {guest.toolsStatus}" if guest else "no guest information"
            raise UserError(
                f"esxi target: VMware Tools reported no IPv4 address for {vm.name} within {timeout:g} s "
                f"(tools: {state}; power: {vm.runtime.powerState})"
            )
        time.sleep(1.0)


def remove(vm, quiet: bool = False) -> bool:
    """Power off (if on) and destroy; True when the VM is gone. Errors are printed, not raised: a clean-up."""
    v = vim()
    name = getattr(vm, "name", "?")
    try:
        if vm.runtime.powerState != v.VirtualMachinePowerState.poweredOff:
            wait_for(vm.PowerOffVM_Task(), f"powering {name} off", timeout=120)
        wait_for(vm.Destroy_Task(), f"destroying {name}", timeout=300)
        return True
    except vmodl_fault().ManagedObjectNotFound:  # gone already
        return True
    except Exception as exc:  # noqa: BLE001 (said, and the next run or `vm clean` tries again)
        if not quiet:
            print(f"pacsbench: warning: esxi VM {name} not removed: {exc}", file=sys.stderr)
        return False


def vmodl_fault():
    """pyVmomi's vmodl.fault namespace (ManagedObjectNotFound lives there, not in vim.fault)."""
    from pyVmomi import vmodl

    return vmodl.fault


def power_off(vm) -> None:
    v = vim()
    if vm.runtime.powerState != v.VirtualMachinePowerState.poweredOff:
        wait_for(vm.PowerOffVM_Task(), f"powering {vm.name} off", timeout=120)


def pacsbench_vms(session: Session) -> list[tuple[object, dict]]:
    """Every VM with a pacsbench annotation, with what the annotation says (run, host, pid, t)."""
    found = []
    for vm in all_of(session, vim().VirtualMachine):
        try:
            note = vm.config.annotation if vm.config else ""
        except Exception:  # noqa: BLE001 (destroyed meanwhile)
            continue
        if match := ANNOTATION.match(note or ""):
            found.append((vm, match.groupdict()))
    return found


def harness_gone(facts: dict) -> bool:
    """The harness named in an annotation ran on this host and no longer runs (its pid is gone, or reused)."""
    if facts["host"] != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(int(facts["pid"])).create_time() - float(facts["t"])) > 0.05
    except psutil.Error:
        return True


def remove_leftovers(session: Session, every: bool = False) -> list[str]:
    """Destroy the VMs killed harnesses of this host left; with `every` (`vm clean`) also kept VMs and those of
    other hosts' harnesses, but never one whose harness still runs here. Their names."""
    removed = []
    for vm, facts in pacsbench_vms(session):
        mine_and_alive = facts["host"] == socket.gethostname() and not harness_gone(facts)
        leftover = facts["how"] == "harness" and harness_gone(facts)
        if mine_and_alive or not (every or leftover):
            continue
        name = vm.name
        if remove(vm):
            removed.append(name)
    return removed


def vm_facts(vm) -> dict:
    """The VM as configured: hardware version, CPUs, memory and its reservation, disks."""
    config = vm.config
    return {
        "name": vm.name,
        "hardware_version": config.version,
        "guest_id": config.guestId,
        "vcpus": config.hardware.numCPU,
        "memory_mib": config.hardware.memoryMB,
        "memory_reservation_mib": config.memoryAllocation.reservation if config.memoryAllocation else None,
        "disks_gib": [round(d.capacityInKB / (1 << 20), 1) for d in disks(vm)],
        "moref": vm._moId,
    }
