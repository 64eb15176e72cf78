"""The virtualbox target's flow against a stand-in VBoxManage (tests/helpers/vboxmanage.py: VirtualBox cannot be
installed here), whose VMs run our real archive on the NAT-forwarded ports: a full run (C-STORE and STOW-RS), a VM
left by a killed harness removed by the next run, one-line errors; and VBoxManage's documented output formats
parsed.

Not run against VirtualBox itself in CI (docs/targets.md says so).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT
from helpers.tools import require_tool

from bench.targets.virtualbox import (
    attached_disks,
    hypervisor_row,
    left_by_a_killed_harness,
    parse_list_vms,
    parse_machinereadable,
    parse_metrics,
)

STAND_IN = Path(__file__).resolve().parents[1] / "helpers" / "vboxmanage.py"
SCENARIO = """name = "virtualbox-smoke"
[target]
kind = "virtualbox"
ova = "{ova}"
cpus = 1
memory_mib = 1024
data_disk_gib = 1
boot_timeout = 60
[studies]
profile = "tiny"
pool = 2
seed = 1
[load]
users = {users}
duration = {duration}
{tables}"""
# The full run: a modality over DIMSE and one over DICOMweb (STOW-RS), each through its NAT forward.
BOTH_PROTOCOLS = "[users.modality]\ncount = 1\n[users.stow]\ncount = 1\n"
# Transcripts in the formats of the VirtualBox User Manual, chapter 8 ("VBoxManage list", "showvminfo", "metrics").
LIST_VMS = (
    '"pacsbench-20261206-1" {0d7c3b1e-93a1-4c4e-9a35-1b2f1c2d3e4f}\n"my VM" {11111111-2222-3333-4444-555555555555}\n'
)
METRICS_QUERY = """Object          Metric               Values
--------------- -------------------- --------------------------------------------
pacsbench-x     CPU/Load/User        0.00%, 10.50%
pacsbench-x     CPU/Load/Kernel      2.25%
pacsbench-x     RAM/Usage/Used       1048576 kB
"""


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """PATH with the stand-in VBoxManage first, and its VBOX_USER_HOME; the OVA it imports (a small one). Archives of
    stand-in VMs a failed test left are killed at the end."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    folder = tmp_path_factory.mktemp("virtualbox")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = bin_dir / "VBoxManage"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    script.chmod(0o755)
    from bench.targets.vm.export import make_ova
    from bench.targets.vm.image import GuestImage

    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(folder / "disk.qcow2"), "64M"], check=True)
    ova = folder / "pacsbench.ova"
    make_ova(GuestImage(folder), ova, vcpus=2, memory_mib=2048)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VBOX_USER_HOME": str(folder / "vbox")}
    yield env, ova, folder
    for pid in archives_of(folder):  # a failed test's VM: its archive would outlive the session, as a VM does
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)


def pacsbench(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def vboxmanage(env: dict, *args: str) -> str:
    return subprocess.run(["VBoxManage", *args], capture_output=True, text=True, env=env, check=True).stdout


def write_scenario(folder: Path, ova: Path, duration: float = 3, users: str = "") -> Path:
    """The scenario: one modality, or the `[users.*]` tables given (two users)."""
    path = folder / "virtualbox.toml"
    path.write_text(SCENARIO.format(ova=ova, duration=duration, users=2 if users else 1, tables=users))
    return path


def archives_of(folder: Path) -> list[int]:
    """Pids of stand-in VMs' archives still running (their data lives under the stand-in's VM folders)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server_under_test" in words and any(str(folder).encode() in w for w in words):
            found.append(int(cmdline.parent.name))
    return found


def test_vboxmanage_output_is_read_as_the_manual_shows_it():
    assert parse_list_vms(LIST_VMS) == [
        ("pacsbench-20261206-1", "0d7c3b1e-93a1-4c4e-9a35-1b2f1c2d3e4f"),
        ("my VM", "11111111-2222-3333-4444-555555555555"),
    ]
    assert hypervisor_row(parse_metrics(METRICS_QUERY)) == {
        "hypervisor_cpu_user_pct": 10.5,
        "hypervisor_cpu_kernel_pct": 2.2,
        "hypervisor_ram_used_mib": 1024.0,
    }
    info = parse_machinereadable(
        'name="pacsbench-x"\nUUID="0d7c"\nVMState="running"\n"IDE-0-1"="/vms/x/data.vdi"\n'
        '"IDE-ImageUUID-0-1"="ab"\n"IDE-0-0"="/vms/x/system.vdi"\ncpus=2\n'
    )
    assert info["VMState"] == "running" and info["cpus"] == "2"
    assert attached_disks(info) == ["/vms/x/system.vdi", "/vms/x/data.vdi"]
    assert left_by_a_killed_harness("pacsbench run r1, harness nosuchhost.invalid:1:1") is False  # not this host's
    assert left_by_a_killed_harness(f"pacsbench run r1, harness {os.uname().nodename}:999999999:1") is True
    assert left_by_a_killed_harness("somebody's own VM") is False


@pytest.mark.slow
def test_a_run_imports_the_ova_measures_the_vm_and_removes_it(stand_in, tmp_path):
    env, ova, folder = stand_in
    scenario = write_scenario(tmp_path, ova, users=BOTH_PROTOCOLS)
    result = pacsbench("run", str(scenario), "--results", str(tmp_path), "--no-progress", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["samples"] > 0
    target = run["target"]
    assert target["kind"] == "virtualbox" and target["budget"] == {
        "cpus": 1,
        "memory_bytes": 1024 << 20,
        "enforced_by": "virtualbox-vm",
    }
    facts = target["virtualbox"]
    assert facts["version"] == "7.0.20r163906" and facts["host"]["Operating system"] == "Linux"
    assert facts["vm_name"] == f"pacsbench-{run_dir.name}" and run_dir.name in facts["description"]
    assert facts["import"][:4] == ["import", str(ova), "--vsys", "0"] and facts["removed"] is True
    assert "--cpus" in facts["import"] and facts["disks"]["data_resized_to_mb"] == 1024
    assert (run_dir / "console.log").stat().st_size > 0  # the serial console (here: the archive's output)
    assert target["port"] == int(facts["nat_port_forwarding"][0].split(",")[3]) and target["ae_title"] == "PACSBENCH"
    # DICOMweb (on in the guest's defaults) through its own forward, to the guest's port 8042
    web_rule = facts["nat_port_forwarding"][2].split(",")
    assert web_rule[0] == "dicomweb" and web_rule[5] == "8042"
    assert target["dicomweb_url"] == f"http://127.0.0.1:{web_rule[3]}/dicom-web"
    samples = pd.read_csv(run_dir / "samples.csv", dtype={"error": str}).fillna({"error": ""})
    for operation in ("C-STORE", "STOW-RS"):
        rows = samples[samples["operation"] == operation]
        assert len(rows) and (rows["error"] == "").all(), samples.tail().to_string()
    assert (samples.loc[samples["operation"] == "STOW-RS", "status"] == 200).all()
    rows = (run_dir / "server_metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    ram = [row.split(",")[header.index("hypervisor_ram_used_mib")] for row in rows[1:]]
    assert any(float(value) > 10 for value in ram if value), ram  # the archive's resident memory, in MiB
    view = run["resources"]["hypervisor_view"]
    assert view["samples"] > 0 and "hypervisor_cpu_user_pct" in view["columns"] and not view["synthetic"]
    assert run["resources"]["guest_view"]["sampled"]  # the archive's own /metrics, through the forwarded port
    assert parse_list_vms(vboxmanage(env, "list", "vms")) == []
    assert not list((folder / "vbox" / "VirtualBox VMs").glob("*")) and not archives_of(folder)


@pytest.mark.slow
def test_a_vm_left_by_a_killed_harness_is_removed_by_the_next_run(stand_in, tmp_path):
    env, ova, folder = stand_in
    scenario = write_scenario(tmp_path, ova, duration=60)
    killed = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(scenario), "--results", str(tmp_path / "a"), "--no-progress"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((tmp_path / "a").glob("*/server_metrics.csv")):
            time.sleep(0.5)  # the sampler starts once the VM answered C-ECHO
        left = parse_list_vms(vboxmanage(env, "list", "vms"))
        assert len(left) == 1 and archives_of(folder)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    time.sleep(1)
    assert parse_list_vms(vboxmanage(env, "list", "vms")) == left and archives_of(folder)  # a VM outlives its harness
    scenario = write_scenario(tmp_path, ova, duration=2)
    result = pacsbench("run", str(scenario), "--results", str(tmp_path / "b"), "--no-progress", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    assert run["target"]["virtualbox"]["left_by_killed_runs_removed"] == [left[0][0]]
    assert parse_list_vms(vboxmanage(env, "list", "vms")) == [] and not archives_of(folder)


def test_a_missing_ova_or_vboxmanage_is_one_line(stand_in, tmp_path):
    env, ova, folder = stand_in
    missing = tmp_path / "none.ova"
    result = pacsbench("run", str(write_scenario(tmp_path, missing)), "--results", str(tmp_path), env=env)
    assert result.returncode == 2 and result.stderr.strip() == (
        f"pacsbench: error: OVA {missing} not found: write one with `pacsbench vm export --format ova --out {missing}`"
    )
    no_vbox = {**env, "PATH": str(Path(sys.executable).parent)}  # python, no VBoxManage
    result = pacsbench("run", str(write_scenario(tmp_path, ova)), "--results", str(tmp_path), env=no_vbox)
    assert result.returncode == 2 and result.stderr.strip() == (
        "pacsbench: error: VBoxManage not found: install VirtualBox (https://www.virtualbox.org) or put it on PATH"
    )
    assert parse_list_vms(vboxmanage(env, "list", "vms")) == [] and not archives_of(folder)


@pytest.mark.slow
def test_a_run_on_a_real_virtualbox(virtualbox, root, tmp_path):
    """Only where VirtualBox is installed (never in CI, where it cannot be): the real guest image's OVA, imported,
    booted, measured and deleted."""
    scenario = tmp_path / "virtualbox.toml"
    scenario.write_text(
        SCENARIO.replace('ova = "{ova}"\n', "").replace("boot_timeout = 60", "boot_timeout = 600").format(duration=10)
    )
    result = pacsbench(
        "run", str(scenario), "--results", str(tmp_path), "--no-progress", env=dict(os.environ), timeout=3600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    assert run["status"] == "completed" and run["target"]["hypervisor"] == "oracle"
    assert run["resources"]["hypervisor_view"]["samples"] > 0 and run["resources"]["guest_view"]["sampled"]
    vms = subprocess.run([virtualbox, "list", "vms"], capture_output=True, text=True, check=True).stdout
    assert run["target"]["virtualbox"]["vm_name"] not in vms
