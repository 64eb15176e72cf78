"""The `virtualbox` target: the exported OVA imported into VirtualBox with VBoxManage, run headless, removed.

VBoxManage is VirtualBox's own command line and the convention others (Vagrant, Packer) drive it by;
the flow and output formats are those of the VirtualBox User Manual, chapter 8 "VBoxManage":

    import OVA --vsys 0 --vmname --cpus --memory --description --options importtovdi
    modifymedium disk DATA --resize MB    (the data disk to the scenario's size: VDI resizes)
    modifyvm --natpf1 ... --uart1 ...      (NAT port forwarding of DICOM, metrics and DICOMweb on 127.0.0.1:
                                            no Guest Additions needed; the serial console into the run
                                            folder's console.log)
    startvm --type headless -> C-ECHO -> metrics setup/query each second (the sampler) -> the run
    controlvm poweroff, unregistervm --delete   (in a finally, and on SIGTERM through the run's finally)

Each VM is named after its run and described with the harness that made it (host, pid, start time):
a VM left by a harness that was killed is powered off and deleted by the next run on this host.
The guest takes its address by DHCP from VirtualBox's NAT and runs the archive with its defaults, DICOMweb
included (server_under_test/guest.py): its DICOMweb port is forwarded too, whether the run uses it or not. It
is not waited for: each archive worker starts its DICOMweb server before it takes associations, so a C-ECHO
answer means DICOMweb is up; a guest without it (an OVA exported before it had DICOMweb) is not an error until a
DICOMweb user asks.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common.errors import UserError
from bench.common.processes import check_port_free, free_local_port, interrupt_on_sigterm, last_line
from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import VirtualBoxSpec
from bench.targets.guest_settings import dicomweb_url
from bench.targets.probes import archive_facts, hypervisor_labels, save_server_status
from bench.targets.target import Target
from bench.targets.vm.export import default_ova
from bench.targets.vm.network import GUEST_DICOM_PORT, GUEST_DICOMWEB_PORT, GUEST_METRICS_PORT
from bench.targets.vm.target import STATUS_TIMEOUT, wait_for_status
from server_under_test.guest import DEFAULTS as GUEST_DEFAULTS

VBOXMANAGE = "VBoxManage"
VM_PREFIX = "pacsbench-"
HARNESS_WORD = "harness"  # the description: "pacsbench run RUN_ID, harness HOST:PID:START"
# The VM process as the host sees it (manual, "VBoxManage metrics": a VM's CPU/Load and RAM/Usage).
METRICS = {"CPU/Load/User": "hypervisor_cpu_user_pct", "CPU/Load/Kernel": "hypervisor_cpu_kernel_pct"}
RAM_METRIC = "RAM/Usage/Used"  # kB
STATE_SECONDS = 2.0  # how long a VM state read is reused while waiting for C-ECHO
UNREGISTER_TRIES = 20  # a powered-off VM's session is released a moment later: unregister retries meanwhile


def vboxmanage_path() -> str:
    found = shutil.which(VBOXMANAGE)
    if not found:
        raise UserError(f"{VBOXMANAGE} not found: install VirtualBox (https://www.virtualbox.org) or put it on PATH")
    return found


class VBoxManage:
    """VBoxManage calls; every command and its output are appended to a log (the run's virtualbox.log)."""

    def __init__(self, path: str, log: Path | None = None):
        self.path, self.log = path, log

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        try:
            done = subprocess.run([self.path, *args], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{VBOXMANAGE} {args[0]} did not finish within {timeout:g} s") from None
        if self.log:
            with self.log.open("a") as log:
                log.write(f"$ {VBOXMANAGE} {' '.join(args)}\n{done.stdout}{done.stderr}")
        if check and done.returncode != 0:
            raise UserError(
                f"{VBOXMANAGE} {args[0]} failed ({done.returncode}): {last_line(done.stderr or done.stdout)}"
            )
        return done.stdout


# --- VBoxManage's output, as the manual shows it ----------------------------------------------


def parse_list_vms(text: str) -> list[tuple[str, str]]:
    """`list vms`: one `"name" {uuid}` per line."""
    return re.findall(r'^"(.*)" \{([0-9a-fA-F-]+)\}\s*$', text, re.MULTILINE)


def parse_machinereadable(text: str) -> dict[str, str]:
    """`showvminfo --machinereadable`: key=value lines, either side maybe in double quotes."""
    facts = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip().strip('"')] = value.strip().strip('"')
    return facts


def parse_hostinfo(text: str) -> dict[str, str]:
    """`list hostinfo`: "Name: value" lines under a "Host Information:" heading."""
    facts = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            facts[key.strip()] = value.strip()
    return facts


def parse_metrics(text: str) -> dict[str, float]:
    """`metrics query`: Object, Metric and Values columns; the newest value of each metric, without its unit."""
    figures = {}
    for line in text.splitlines():
        words = line.split(None, 2)
        if len(words) < 3 or words[0] == "Object" or set(words[0]) == {"-"}:
            continue
        newest = words[2].split(",")[-1].strip()
        number = re.match(r"[-+]?\d+(\.\d+)?", newest)
        if number:
            figures[words[1]] = float(number.group())
    return figures


def hypervisor_row(figures: dict[str, float]) -> dict:
    """The hypervisor_* columns of server_metrics.csv from one `metrics query`."""
    row = {column: round(figures[metric], 1) for metric, column in METRICS.items() if metric in figures}
    if RAM_METRIC in figures:
        row["hypervisor_ram_used_mib"] = round(figures[RAM_METRIC] / 1024, 1)
    return row


def query_metrics(tool: VBoxManage, vm: str) -> dict:
    """One second's host view of the VM process; {} when VirtualBox gives none (the VM stopped, say)."""
    try:
        text = tool("metrics", "query", vm, ",".join([*METRICS, RAM_METRIC]), timeout=5)
    except UserError:
        return {}
    return hypervisor_row(parse_metrics(text))


@dataclass
class VirtualBoxMetrics:
    """The sampler's reader of a VM's host view (bench.runs.resources): one `metrics query` per reading."""

    tool: VBoxManage
    vm: str

    def start(self) -> None:
        """Nothing to start: the target ran `metrics setup` before the load."""

    def stop(self) -> None:
        """Nothing to stop."""

    def take(self) -> dict:
        return query_metrics(self.tool, self.vm)


def hypervisor_reader(source: dict) -> VirtualBoxMetrics:
    """The reader the sampler process runs, from the target's hypervisor_source() (JSON)."""
    return VirtualBoxMetrics(VBoxManage(source["vboxmanage"]), source["vm"])


# --- VMs of this harness and of killed ones ---------------------------------------------------


def harness_identity(pid: int | None = None) -> str:
    """HOST:PID:START of a harness process: a pid alone could be reused by another process later."""
    process = psutil.Process(pid)
    return f"{socket.gethostname()}:{process.pid}:{int(process.create_time())}"


def harness_alive(identity: str) -> bool:
    host, _, rest = identity.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname():
        return True  # another machine's harness: not ours to judge
    try:
        return int(psutil.Process(int(pid)).create_time()) == int(start)
    except (psutil.Error, ValueError):
        return False


def left_by_a_killed_harness(description: str) -> bool:
    found = re.search(rf"{HARNESS_WORD} (\S+)", description)
    return bool(found) and not harness_alive(found.group(1))


def remove_vm(tool: VBoxManage, vm: str) -> None:
    """Power off (if running) and unregister with its disks; retried while VirtualBox releases the session."""
    state = parse_machinereadable(tool("showvminfo", vm, "--machinereadable", check=False)).get("VMState")
    if state in ("running", "paused", "stuck", "starting"):
        tool("controlvm", vm, "poweroff", check=False)
    for attempt in range(UNREGISTER_TRIES):
        try:
            tool("unregistervm", vm, "--delete")
            return
        except UserError:
            if attempt == UNREGISTER_TRIES - 1:
                raise
            time.sleep(0.5)


def remove_leftover_vms(tool: VBoxManage) -> list[str]:
    """Remove the pacsbench VMs whose harness is gone (killed before its clean-up); their names."""
    removed = []
    for name, uuid in parse_list_vms(tool("list", "vms")):
        if not name.startswith(VM_PREFIX):
            continue
        info = parse_machinereadable(tool("showvminfo", uuid, "--machinereadable", check=False))
        if left_by_a_killed_harness(info.get("description", "")):
            remove_vm(tool, uuid)
            removed.append(name)
    return removed


def attached_disks(info: dict[str, str]) -> list[str]:
    """The hard disk images attached to the VM, by controller port and device (`"IDE-0-1"="/path/x.vdi"`)."""
    slots = []
    for key, value in info.items():
        match = re.fullmatch(r"(.+)-(\d+)-(\d+)", key)
        if match and not match.group(1).endswith("ImageUUID") and re.search(r"\.(vdi|vmdk|vhd)$", value, re.I):
            slots.append((int(match.group(2)), int(match.group(3)), value))
    return [path for _, _, path in sorted(slots)]


class VirtualBoxTarget(Target):
    """Import the OVA, resize its data disk, forward the ports, start it headless; power off and delete it."""

    kind = "virtualbox"
    spec: VirtualBoxSpec

    def __init__(self, spec: VirtualBoxSpec, client: ClientSpec, progress: bool = True):
        """Checks what the user must fix (VBoxManage on PATH, the scenario's OVA) before the run starts anything."""
        super().__init__(spec, client)
        self.progress = progress
        self.vboxmanage = vboxmanage_path()
        if spec.ova is not None:
            self.ova()
        self.tool: VBoxManage | None = None
        self.vm: str | None = None  # the VM's UUID once imported
        self.name = ""
        self.facts: dict = {}
        self.metrics_url: str | None = None
        self._state: tuple[float, bool] = (0.0, False)

    def ova(self) -> Path:
        if self.spec.ova is None:
            return default_ova(progress=self.progress)
        path = Path(self.spec.ova).expanduser()
        if not path.is_file():
            raise UserError(f"OVA {path} not found: write one with `pacsbench vm export --format ova --out {path}`")
        return path

    def start(self, run_dir: Path) -> None:
        self.tool = VBoxManage(self.vboxmanage, run_dir / "virtualbox.log")
        interrupt_on_sigterm()
        ova = self.ova()
        if self.spec.port:
            check_port_free(self.spec.port)
        self.facts = {
            "version": self.tool("--version").strip(),
            "host": parse_hostinfo(self.tool("list", "hostinfo")),
            "left_by_killed_runs_removed": remove_leftover_vms(self.tool),
            "ova": str(ova),
        }
        self.name = f"{VM_PREFIX}{run_dir.name}"
        importing = time.monotonic()
        self._import(ova, run_dir.name)
        self._resize_data_disk()
        self._configure(run_dir / "console.log")
        self.facts["import_seconds"] = round(time.monotonic() - importing, 2)
        started = time.monotonic()
        self.tool("startvm", self.vm, "--type", "headless")
        self.tool("metrics", "setup", "--period", "1", "--samples", "1", self.vm, "CPU/Load,RAM/Usage")
        try:
            wait_for_echo(self.peer, self.client.calling_ae, self.spec.boot_timeout, alive=self.running)
        except UserError as exc:
            state = "running" if self.running() else "not running"
            console = run_dir / "console.log"
            tail = last_line(console.read_text(errors="replace")) if console.is_file() else "no console output"
            raise UserError(f"virtualbox VM {self.name} ({state}): {exc} (console {console}: {tail[:120]})") from None
        self.ready_seconds = time.monotonic() - started
        self.status = wait_for_status(self.metrics_url, STATUS_TIMEOUT)

    def _import(self, ova: Path, run_id: str) -> None:
        description = f"pacsbench run {run_id}, {HARNESS_WORD} {harness_identity()}"
        command = [
            *("import", str(ova), "--vsys", "0", "--vmname", self.name),
            *("--cpus", str(self.spec.cpus), "--memory", str(self.spec.memory_mib)),
            *("--description", description, "--options", "importtovdi"),  # VDI: a disk VirtualBox can resize
        ]
        self.vm = self.name  # from here on stop() removes it, even if the import itself failed half-way
        self.tool(*command, timeout=1800)
        self.vm = parse_machinereadable(self.tool("showvminfo", self.name, "--machinereadable"))["UUID"]
        self.facts |= {"vm_name": self.name, "vm_uuid": self.vm, "description": description, "import": command}

    def _resize_data_disk(self) -> None:
        disks = attached_disks(parse_machinereadable(self.tool("showvminfo", self.vm, "--machinereadable")))
        if len(disks) < 2:
            raise UserError(f"the OVA gave the VM {len(disks)} disk(s), not a system and a data disk: export it again")
        megabytes = self.spec.data_disk_gib * 1024
        self.tool("modifymedium", "disk", disks[1], "--resize", str(megabytes))
        self.facts["disks"] = {"system": disks[0], "data": disks[1], "data_resized_to_mb": megabytes}

    def _configure(self, console: Path) -> None:
        """NAT port forwarding for DICOM, the metrics page and DICOMweb on free host ports; the serial console into
        a file of the run folder (the guest prints its settings and data disk there, as in QEMU's console.log)."""
        port = self.spec.port or free_local_port()
        metrics_port, web_port = free_local_port(), free_local_port()
        rules = [
            f"dicom,tcp,127.0.0.1,{port},,{GUEST_DICOM_PORT}",
            f"metrics,tcp,127.0.0.1,{metrics_port},,{GUEST_METRICS_PORT}",
            f"dicomweb,tcp,127.0.0.1,{web_port},,{GUEST_DICOMWEB_PORT}",
        ]
        forwarding = [word for rule in rules for word in ("--natpf1", rule)]
        serial = ["--uart1", "0x3F8", "4", "--uartmode1", "file", str(console.absolute())]
        self.tool("modifyvm", self.vm, "--nic1", "nat", *forwarding, *serial)
        self.peer = Peer("127.0.0.1", port, GUEST_DEFAULTS["aet"], dicomweb_url("127.0.0.1", web_port))
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self.facts |= {"nat_port_forwarding": rules, "console_log": str(console.absolute())}

    def running(self) -> bool:
        """Whether VirtualBox says the VM runs (read at most every STATE_SECONDS while waiting for C-ECHO)."""
        at, running = self._state
        if time.monotonic() - at > STATE_SECONDS:
            info = parse_machinereadable(self.tool("showvminfo", self.vm, "--machinereadable", check=False))
            running = info.get("VMState") in ("running", "starting")
            self._state = (time.monotonic(), running)
        return running

    def hypervisor_source(self) -> dict | None:
        if not (self.vm and self.tool):
            return None
        return {"kind": "virtualbox", "vm": self.vm, "vboxmanage": self.tool.path}

    def guest_metrics_url(self) -> str | None:
        return self.metrics_url

    def collect_metrics(self, run_dir: Path) -> None:
        if self.metrics_url and self.vm:
            save_server_status(run_dir, self.metrics_url, timeout=STATUS_TIMEOUT)

    def stop(self) -> None:
        if self.vm is None or self.tool is None:
            return
        vm, self.vm = self.vm, None
        if any(vm in (name, uuid) for name, uuid in parse_list_vms(self.tool("list", "vms", check=False))):
            remove_vm(self.tool, vm)
        self.facts["removed"] = True

    def budget_record(self) -> dict:
        return {"cpus": self.spec.cpus, "memory_bytes": self.spec.memory_mib << 20, "enforced_by": "virtualbox-vm"}

    def describe(self) -> dict:
        facts = archive_facts(self.status)
        return {
            "kind": self.kind,
            "label": self.label,
            **facts,
            "requested_hypervisor": "oracle",  # what systemd-detect-virt says inside VirtualBox
            **hypervisor_labels(facts.get("hypervisor"), "oracle", "the guest's /status"),
            "memory_mib": self.spec.memory_mib,
            "budget": self.budget_record(),
            "network": "VirtualBox NAT, port forwarding on 127.0.0.1, E1000",
            "disk": f"data: {self.spec.data_disk_gib} GiB VDI (resized from the OVA's), ext4 made by the guest",
            "host": self.peer.host if self.peer else None,
            "port": self.peer.port if self.peer else None,
            "ae_title": GUEST_DEFAULTS["aet"],
            "fsync": GUEST_DEFAULTS["fsync"] == "1",
            "max_pdu": int(GUEST_DEFAULTS["max_pdu"]),
            "metrics_url": self.metrics_url,
            "dicomweb_url": self.peer.dicomweb_url if self.peer else None,
            "boot_to_ready_seconds": round(self.ready_seconds, 2) if self.ready_seconds else None,
            "ready_seconds": round(self.ready_seconds, 2) if self.ready_seconds else None,
            "virtualbox": self.facts or None,
        }
