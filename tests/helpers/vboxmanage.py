"""A stand-in `VBoxManage` for the virtualbox target's tests: VirtualBox cannot be installed on the test machines.

It implements only what the target calls, with the arguments and output formats the VirtualBox User
Manual (7.0) documents in chapter 8, "VBoxManage": `--version`, `list vms|hostinfo`, `import`
(--vsys 0 --vmname --cpus --memory --description --options), `showvminfo --machinereadable`,
`modifymedium disk --resize`, `modifyvm --nic1 nat --natpf1 --uart1 --uartmode1 file`, `startvm --type headless`,
`controlvm poweroff`, `unregistervm --delete` and `metrics setup|query`. Anything else is an error.

The VMs are kept in a JSON file under $VBOX_USER_HOME (VirtualBox's own variable for its settings
folder), their disks as sparse files beside it. `startvm` runs our real archive
(`python -m server_under_test`) with the guest's defaults (DICOMweb on) on the NAT-forwarded host ports, in a
session of its own, so it outlives a killed harness as a real VM does; `controlvm poweroff` kills it
(a power-off is abrupt); `metrics query` reports that process tree's CPU (share of the host's CPU
time since the last query, as VirtualBox's CPU/Load) and resident memory through psutil.

Run as `python tests/helpers/vboxmanage.py ARGS`; tests put a `VBoxManage` script that does so on PATH
(tests/targets/test_virtualbox.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil

VERSION = "7.0.20r163906"
OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
# Where the guest's archive listens (its defaults: server_under_test/guest.py).
GUEST_DICOM_PORT, GUEST_METRICS_PORT, GUEST_DICOMWEB_PORT = 11112, 8080, 8042


class Fail(Exception):
    """VBoxManage's error: `VBoxManage: error: ...` on stderr, exit 1."""


def home() -> Path:
    folder = Path(os.environ.get("VBOX_USER_HOME") or Path.home() / ".config" / "VirtualBox")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def registry():
    """The registered VMs ({uuid: vm}), locked for this call (the sampler queries while the harness works)."""
    path = home() / "pacsbench-standin.json"
    with (home() / "pacsbench-standin.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        vms = json.loads(path.read_text()) if path.is_file() else {}
        yield vms
        path.write_text(json.dumps(vms, indent=1))


def find(vms: dict, name_or_uuid: str) -> dict:
    for vm in vms.values():
        if name_or_uuid in (vm["name"], vm["uuid"]):
            return vm
    raise Fail(f"Could not find a registered machine named '{name_or_uuid}'")


def options(
    args: list[str], *names: str, flags: tuple[str, ...] = (), pairs: tuple[str, ...] = ()
) -> tuple[dict[str, list[str]], list[str]]:
    """--name value (repeatable), --pair value value (--uart1 0x3F8 4), --flag, and the positional words; any
    other option is an error."""
    found: dict[str, list[str]] = {}
    words = []
    it = iter(args)
    for arg in it:
        if arg in flags:
            found[arg] = []
        elif arg in pairs:
            found[arg] = [next(it), next(it)]
        elif arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in names:
                raise Fail(f"Unknown option: {name}")
            found.setdefault(name, []).append(value if eq else next(it))
        else:
            words.append(arg)
    return found, words


def running(vm: dict) -> bool:
    pid, start = vm.get("pid"), vm.get("pid_start")
    try:
        return bool(pid) and psutil.Process(pid).create_time() == start
    except psutil.Error:
        return False


def state(vm: dict) -> str:
    return "running" if running(vm) else "poweroff"


# --- subcommands ------------------------------------------------------------------------------


def cmd_list(args: list[str]) -> None:
    if args == ["vms"]:
        with registry() as vms:
            for vm in vms.values():
                print(f'"{vm["name"]}" {{{vm["uuid"]}}}')
    elif args == ["hostinfo"]:
        print("Host Information:\n")
        print(f"Host time: {time.strftime('%Y-%m-%dT%H:%M:%S.000000000Z', time.gmtime())}")
        print(f"Processor online count: {psutil.cpu_count()}")
        print(f"Processor count: {psutil.cpu_count()}")
        print(f"Processor#0 description: {cpu_model()}")
        print(f"Memory size: {psutil.virtual_memory().total >> 20} MByte")
        print(f"Memory available: {psutil.virtual_memory().available >> 20} MByte")
        print("Operating system: Linux")
        print(f"Operating system version: {os.uname().release}")
    else:
        raise Fail(f"Unknown list: {' '.join(args)}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def read_ovf(ova: Path) -> ET.Element:
    if not ova.is_file():
        raise Fail(f"Appliance file '{ova}' not found (VERR_FILE_NOT_FOUND)")
    with tarfile.open(ova) as tar:
        first = tar.getmembers()[0]
        if not first.name.endswith(".ovf"):
            raise Fail("Appliance read failed: the OVF descriptor must be the first file in the OVA")
        return ET.fromstring(tar.extractfile(first).read())


def cmd_import(args: list[str]) -> None:
    found, words = options(args, "--vsys", "--vmname", "--cpus", "--memory", "--description", "--options")
    if found.get("--vsys") != ["0"] or len(words) != 1:
        raise Fail("import: give the OVA and --vsys 0")
    envelope = read_ovf(Path(words[0]))
    name = found["--vmname"][0]
    with registry() as vms:
        if any(vm["name"] == name for vm in vms.values()):
            raise Fail(f"A machine named '{name}' already exists")
        folder = home() / "VirtualBox VMs" / name
        folder.mkdir(parents=True)
        disks = {}
        for number, disk in enumerate(envelope.iter(f"{{{OVF}}}Disk"), 1):
            path = folder / f"{name}-disk{number:03}.vdi"
            with path.open("wb") as f:
                f.truncate(int(disk.get(f"{{{OVF}}}capacity")))
            disks[disk.get(f"{{{OVF}}}diskId")] = str(path)
        attached = {}
        for item in envelope.iter(f"{{{OVF}}}Item"):
            if item.findtext(f"{{{RASD}}}ResourceType") == "17":
                disk_id = item.findtext(f"{{{RASD}}}HostResource").rsplit("/", 1)[-1]
                attached[f"IDE-0-{item.findtext(f'{{{RASD}}}AddressOnParent')}"] = disks[disk_id]
        vm = {
            "name": name,
            "uuid": str(uuid.uuid4()),
            "description": (found.get("--description") or [""])[0],
            "cpus": int((found.get("--cpus") or ["1"])[0]),
            "memory": int((found.get("--memory") or ["1024"])[0]),
            "folder": str(folder),
            "disks": attached,
            "forwarding": [],
        }
        vms[vm["uuid"]] = vm
    print("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%")
    print("Successfully imported the appliance.")


def cmd_showvminfo(args: list[str]) -> None:
    found, words = options(args, flags=("--machinereadable",))
    if "--machinereadable" not in found:
        raise Fail("only --machinereadable is supported by this stand-in")
    with registry() as vms:
        vm = find(vms, words[0])
        print(f'name="{vm["name"]}"')
        print('ostype="Debian (64-bit)"')
        print(f'UUID="{vm["uuid"]}"')
        print(f'description="{vm["description"]}"')
        print(f"memory={vm['memory']}")
        print(f"cpus={vm['cpus']}")
        print(f'VMState="{state(vm)}"')
        print('storagecontrollername0="IDE"')
        for slot, path in sorted(vm["disks"].items()):
            print(f'"{slot}"="{path}"')
        print('nic1="nat"')
        for number, rule in enumerate(vm["forwarding"]):
            print(f'Forwarding({number})="{rule}"')


def cmd_modifymedium(args: list[str]) -> None:
    found, words = options(args, "--resize")
    if words[:1] != ["disk"] or len(words) != 2:
        raise Fail("modifymedium: give disk PATH")
    path = Path(words[1])
    if not path.is_file():
        raise Fail(f"Could not find file for the medium '{path}' (VERR_FILE_NOT_FOUND)")
    size = int(found["--resize"][0]) << 20
    if size < path.stat().st_size:
        raise Fail("Shrinking is not yet supported for medium")
    with path.open("r+b") as f:
        f.truncate(size)
    print("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%")


def cmd_modifyvm(args: list[str]) -> None:
    found, words = options(args, "--nic1", "--natpf1", pairs=("--uart1", "--uartmode1"))
    with registry() as vms:
        vm = find(vms, words[0])
        if running(vm):
            raise Fail(f"The machine '{vm['name']}' is already locked for a session (or being unlocked)")
        vm["forwarding"] += found.get("--natpf1", [])
        if found.get("--uartmode1", [""])[0] == "file":
            vm["serial_file"] = found["--uartmode1"][1]  # the "guest's" console: the archive's output here


def forwarded(vm: dict, guest_port: int, needed: bool = True) -> int | None:
    for rule in vm["forwarding"]:
        _, _, _, host_port, _, to = rule.split(",")
        if int(to) == guest_port:
            return int(host_port)
    if needed:
        raise Fail(f"no port forwarded to guest port {guest_port}: the guest would be unreachable")
    return None


def cmd_startvm(args: list[str]) -> None:
    found, words = options(args, "--type")
    with registry() as vms:
        vm = find(vms, words[0])
        if running(vm):
            raise Fail(f"The machine '{vm['name']}' is already locked by a session (or being locked or unlocked)")
        folder = Path(vm["folder"])
        (folder / "Logs").mkdir(exist_ok=True)
        command = [
            *(sys.executable, "-m", "server_under_test", "--host", "127.0.0.1"),
            *("--port", str(forwarded(vm, GUEST_DICOM_PORT)), "--metrics-port", str(forwarded(vm, GUEST_METRICS_PORT))),
            *("--data", str(folder / "archive"), "--workers", "1"),
        ]
        # The guest serves DICOMweb by default; without a forward nobody outside reaches it.
        if web_port := forwarded(vm, GUEST_DICOMWEB_PORT, needed=False):
            command += ["--dicomweb-port", str(web_port)]
        with Path(vm.get("serial_file") or folder / "Logs" / "VBox.log").open("ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        vm["pid"], vm["pid_start"] = process.pid, psutil.Process(process.pid).create_time()
        vm["metrics"] = {}
    print(f'Waiting for VM "{vm["name"]}" to power on...')
    print(f'VM "{vm["name"]}" has been successfully started.')


def cmd_controlvm(args: list[str]) -> None:
    if args[1:] != ["poweroff"]:
        raise Fail("this stand-in knows only controlvm VM poweroff")
    with registry() as vms:
        vm = find(vms, args[0])
        if not running(vm):
            raise Fail(f"Machine '{vm['name']}' is not currently running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(vm["pid"], signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(vm["pid"]).wait(30)
        vm["pid"] = None
    print("0%...10%...20%...30%...40%...50%...60%...70%...80%...90%...100%")


def cmd_unregistervm(args: list[str]) -> None:
    found, words = options(args, flags=("--delete",))
    with registry() as vms:
        vm = find(vms, words[0])
        if running(vm):
            raise Fail(f"Cannot unregister the machine '{vm['name']}' while it is locked")
        if "--delete" in found:
            shutil.rmtree(vm["folder"], ignore_errors=True)
        del vms[vm["uuid"]]


def cmd_metrics(args: list[str]) -> None:
    if args[:1] == ["setup"]:
        found, words = options(args[1:], "--period", "--samples")
        with registry() as vms:
            vm = find(vms, words[0])
            if not running(vm):
                raise Fail("Metric collection can only be enabled for started VMs")
            vm["metrics"] = {"period": int(found["--period"][0]), "base": words[1].split(",")}
        print("The following metrics were modified:\n")
        print(f"{'Object':<15} Metric")
        print(f"{'-' * 15} {'-' * 20}")
        for base in words[1].split(","):
            print(f"{vm['name']:<15} {base}")
    elif args[:1] == ["query"]:
        with registry() as vms:
            vm = find(vms, args[1])
            figures = measure(vm) if running(vm) and vm.get("metrics") else {}
        print(f"{'Object':<15} {'Metric':<20} Values")
        print(f"{'-' * 15} {'-' * 20} {'-' * 44}")
        for metric in args[2].split(","):
            if metric in figures:
                print(f"{vm['name']:<15} {metric:<20} {figures[metric]}")
    else:
        raise Fail("metrics: setup or query")


def measure(vm: dict) -> dict[str, str]:
    """The archive tree's CPU since the last query (share of all host CPUs, as VirtualBox's CPU/Load) and RSS."""
    user = system = rss = 0.0
    try:
        root = psutil.Process(vm["pid"])
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = []
    for process in tree:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            user += times.user + times.children_user
            system += times.system + times.children_system
            rss += process.memory_info().rss
    now = time.time()
    last = vm["metrics"].get("last") or [now - 1, user, system]
    seconds = max(now - last[0], 1e-3) * psutil.cpu_count()
    vm["metrics"]["last"] = [now, user, system]
    return {
        "CPU/Load/User": f"{100 * max(user - last[1], 0) / seconds:.2f}%",
        "CPU/Load/Kernel": f"{100 * max(system - last[2], 0) / seconds:.2f}%",
        "RAM/Usage/Used": f"{int(rss) >> 10} kB",
    }


COMMANDS = {
    "list": cmd_list,
    "import": cmd_import,
    "showvminfo": cmd_showvminfo,
    "modifymedium": cmd_modifymedium,
    "modifyvm": cmd_modifyvm,
    "startvm": cmd_startvm,
    "controlvm": cmd_controlvm,
    "unregistervm": cmd_unregistervm,
    "metrics": cmd_metrics,
}


def main(argv: list[str]) -> int:
    if argv in (["--version"], ["-v"]):
        print(VERSION)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(f"VBoxManage: error: Invalid command '{argv[0] if argv else ''}'", file=sys.stderr)
        return 1
    try:
        COMMANDS[argv[0]](argv[1:])
    except (Fail, StopIteration, IndexError, KeyError) as exc:
        print(f"VBoxManage: error: {exc if isinstance(exc, Fail) else 'Syntax error in ' + argv[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
