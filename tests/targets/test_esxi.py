"""The esxi target against VMware's own simulator (govmomi's, tools/vcsim) and a real archive, through the real CLI.

The simulator runs no guest: once the VM is powered on, the test plays VMware Tools by setting the
VM's extraConfig `SET.guest.ipAddress` to 127.0.0.1, where a real archive listens on the port the
scenario gives the VM. One simulator serves the module.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT
from helpers import vcsim as sim
from helpers.archive import start_archive

from bench.report.page import build_report

pytestmark = pytest.mark.slow  # real runs of the load engine, as tests/runs/test_end_to_end.py


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # a TOML basic string or number


def write_scenario(path: Path, target: dict, duration: float = 3, **extra_tables) -> Path:
    lines = ['name = "esxi-test"', "[target]", *(f"{k} = {toml_value(v)}" for k, v in target.items())]
    for table, settings in extra_tables.items():
        lines += [f"[{table.replace('__', '.')}]", *(f"{k} = {toml_value(v)}" for k, v in settings.items())]
    lines += ["[studies]", 'profile = "tiny"', "pool = 1", "seed = 1"]
    lines += ["[load]", "users = 1", "spawn_rate = 1", f"duration = {duration}", "[client]", "timeout = 10"]
    path.write_text("\n".join(lines) + "\n")
    return path


def pacsbench(simulator, *args, timeout: float = 180, wait: bool = True):
    command = [sys.executable, "-m", "bench.cli", *map(str, args)]
    environment = {**os.environ, sim.PASSWORD_ENV: simulator.password, "PACSBENCH_ESXI_PASSWORD": simulator.password}
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def session_of(simulator):
    from pyVim.connect import SmartConnect

    context = ssl.create_default_context(cafile=str(simulator.ca_file))
    return SmartConnect(
        host=simulator.host, port=simulator.port, user=sim.USER, pwd=simulator.password, sslContext=context
    )


def pacsbench_vms(simulator) -> dict[str, str]:
    """VM name -> power state of every VM whose annotation says pacsbench made it."""
    from pyVim.connect import Disconnect
    from pyVmomi import vim

    si = session_of(simulator)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        return {
            vm.name: vm.runtime.powerState
            for vm in view.view
            if (vm.config.annotation or "").startswith("pacsbench run ")
        }
    finally:
        Disconnect(si)


class VmwareTools:
    """Plays VMware Tools for the simulator: a powered-on pacsbench VM gets 127.0.0.1 as its guest address."""

    def __init__(self, simulator):
        self.simulator, self.stopping, self.given = simulator, threading.Event(), []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        self.thread.join(10)

    def _run(self) -> None:
        from pyVim.connect import Disconnect
        from pyVmomi import vim, vmodl

        si = session_of(self.simulator)
        content = si.RetrieveContent()
        try:
            while not self.stopping.wait(0.2):
                view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
                for vm in view.view:
                    try:
                        ours = (vm.config.annotation or "").startswith("pacsbench run ")
                        if ours and vm.runtime.powerState == "poweredOn" and not vm.guest.ipAddress:
                            option = vim.option.OptionValue(key="SET.guest.ipAddress", value="127.0.0.1")
                            vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=[option]))
                            self.given.append(vm.name)
                    except vmodl.fault.ManagedObjectNotFound:
                        continue  # destroyed meanwhile
                view.Destroy()
        finally:
            Disconnect(si)


@pytest.fixture(scope="module")
def simulator(vcsim, tmp_path_factory):
    running = sim.start(vcsim, tmp_path_factory.mktemp("vcsim"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def ova(tmp_path_factory) -> Path:
    return sim.small_ova(tmp_path_factory.mktemp("ova") / "small.ova")


@pytest.fixture(scope="module")
def archive_here(tmp_path_factory):
    """The real archive the VM's address leads to (VMware Tools, played, says 127.0.0.1), DICOMweb on."""
    from bench.common.processes import free_local_port

    data = tmp_path_factory.mktemp("archive") / "data"
    running = start_archive(data, "--metrics-port", "0", "--dicomweb-port", str(free_local_port()))
    yield running
    running.stop()


def esxi_target(simulator, archive, ova: Path, **settings) -> dict:
    metrics_port = int(archive.metrics_url.rsplit(":", 1)[1])
    dicomweb_port = int(archive.dicomweb_url.rsplit(":", 1)[1].split("/")[0])
    return simulator.target(
        ova=str(ova),
        port=archive.port,
        metrics_port=metrics_port,
        dicomweb_port=dicomweb_port,
        ae_title=archive.ae_title,
        **settings,
    )


def run_dir_of(result) -> Path:
    return Path(result.stdout.strip().splitlines()[-1])


def test_killed_harness_leaves_a_vm_the_next_run_removes_then_a_run_cleans_up_after_itself(
    simulator, archive_here, ova, tmp_path
):
    scenario = write_scenario(tmp_path / "esxi.toml", esxi_target(simulator, archive_here, ova), duration=30)
    with VmwareTools(simulator) as tools:
        harness = pacsbench(simulator, "run", scenario, "--results", tmp_path / "killed", "--no-progress", wait=False)
        try:
            deadline = time.monotonic() + 60
            metrics = None
            while time.monotonic() < deadline and harness.poll() is None:
                metrics = next((tmp_path / "killed").glob("*/server_metrics.csv"), None)
                if metrics and len(metrics.read_text().splitlines()) > 1:
                    break  # the load is running
                time.sleep(0.2)
            assert harness.poll() is None, harness.communicate()[1].decode()[-2000:]
            assert metrics is not None, "the run did not reach its load"
        finally:
            harness.send_signal(signal.SIGKILL)
            harness.communicate()
        left = pacsbench_vms(simulator)
        assert len(left) == 1 and list(left.values()) == ["poweredOn"]

        # DICOMweb asked for (as a run with DICOMweb users does): a guestinfo key, and the target checks it answers
        served = esxi_target(simulator, archive_here, ova, dicomweb=True)
        scenario = write_scenario(tmp_path / "esxi.toml", served, duration=3)
        result = pacsbench(simulator, "run", scenario, "--results", tmp_path / "results", "--no-progress")
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(tools.given) == 2
    assert pacsbench_vms(simulator) == {}
    run_dir = run_dir_of(result)
    run = json.loads((run_dir / "run.json").read_text())
    target = run["target"]
    assert run["status"] == "completed" and run["samples"] > 0
    assert target["kind"] == "esxi" and target["host"] == "127.0.0.1" and target["port"] == archive_here.port
    esxi = target["esxi"]
    assert esxi["leftovers_removed"] == list(left)
    assert esxi["product"].startswith("VMware ESXi") and esxi["product_build"]
    assert esxi["host_cpu_model"] and esxi["host_cpu_sockets"] >= 1 and esxi["host_cpu_cores"] >= 1
    assert esxi["datastore_type"] and esxi["vm"]["hardware_version"].startswith("vmx-")
    assert esxi["vm"]["destroyed"] is True and esxi["simulator"] is True
    assert esxi["tls"].startswith("verified against") and esxi["insecure"] is False
    assert esxi["vm"]["vcpus"] == 2 and esxi["vm"]["memory_mib"] == 2048
    assert esxi["vm"]["memory_reservation_mib"] == 2048
    assert esxi["guestinfo"]["guestinfo.pacsbench.port"] == str(archive_here.port)
    assert esxi["guestinfo"]["guestinfo.pacsbench.dicomweb_port"] == str(served["dicomweb_port"])
    assert target["dicomweb_url"] == archive_here.dicomweb_url  # VMware Tools, played, says 127.0.0.1
    assert target["budget"] == {
        "cpus": 2,
        "memory_bytes": 2048 << 20,
        "enforced_by": "esxi-vm",
        "memory_reservation_bytes": 2048 << 20,
    }
    assert simulator.password not in (run_dir / "run.json").read_text()
    assert any("synthetic" in w for w in run["warnings"])

    rows = pd.read_csv(run_dir / "server_metrics.csv")
    samples = rows.dropna(subset=["hypervisor_sample_time"])
    assert len(samples) >= 1
    assert (samples["hypervisor_interval_seconds"] == 20).all()
    assert (
        samples["hypervisor_cpu_ready_percent"].notna().all() and (samples["hypervisor_cpu_ready_percent"] >= 0).all()
    )
    view = run["resources"]["hypervisor_view"]
    assert view["sampled"] and view["synthetic"] and view["samples"] == len(samples)

    build_report(run_dir)
    summary = (run_dir / "summary.md").read_text()
    assert "CPU ready" in summary and "synthetic" in summary


def test_sigterm_powers_off_and_destroys_the_vm(simulator, archive_here, ova, tmp_path):
    scenario = write_scenario(tmp_path / "esxi.toml", esxi_target(simulator, archive_here, ova), duration=30)
    with VmwareTools(simulator) as tools:
        harness = pacsbench(simulator, "run", scenario, "--results", tmp_path / "r", "--no-progress", wait=False)
        try:
            deadline = time.monotonic() + 60
            while not tools.given and time.monotonic() < deadline and harness.poll() is None:
                time.sleep(0.1)
            assert tools.given, harness.communicate()[1].decode()[-2000:]
            harness.send_signal(signal.SIGTERM)
            _, errors = harness.communicate(timeout=60)
        finally:
            if harness.poll() is None:
                harness.kill()
    assert harness.returncode != 0 and "Traceback" not in errors.decode()
    assert pacsbench_vms(simulator) == {}
    (run_dir,) = (tmp_path / "r").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["target"]["esxi"]["vm"]["destroyed"] is True


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"password": "wrong"}, "cannot log in"),
        ({"ca_file": None}, "cannot be verified"),
        ({"datastore": "NoSuchDS"}, "no datastore 'NoSuchDS'"),
        ({"ova": "/nonexistent/pacsbench.ova"}, "no OVA at /nonexistent/pacsbench.ova"),
        ({"boot_timeout": 2}, "VMware Tools reported no IPv4 address"),  # nobody plays VMware Tools here
        ({"ova": "descriptor-only"}, "small.ova lacks what the host asks for: pacsbench-archive-disk1.vmdk"),
    ],
)
def test_a_wrong_setting_is_one_line_exit_2_and_leaves_nothing(
    simulator, archive_here, ova, tmp_path, change, expected
):
    settings = {k: v for k, v in change.items() if k != "password"}
    if settings.get("ova") == "descriptor-only":  # the import lease is aborted when the upload cannot go on
        broken = tmp_path / "broken" / "small.ova"
        broken.parent.mkdir()
        with tarfile.open(ova) as whole, tarfile.open(broken, "w", format=tarfile.USTAR_FORMAT) as part:
            descriptor = next(m for m in whole.getmembers() if m.name.endswith(".ovf"))
            part.addfile(descriptor, whole.extractfile(descriptor))
        settings["ova"] = str(broken)
    target = {k: v for k, v in {**esxi_target(simulator, archive_here, ova), **settings}.items() if v is not None}
    scenario = write_scenario(tmp_path / "esxi.toml", target)
    environment_password = change.get("password", simulator.password)
    command = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        str(scenario),
        "--results",
        str(tmp_path / "r"),
        "--no-progress",
    ]
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, sim.PASSWORD_ENV: environment_password}, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert environment_password not in result.stderr
    assert pacsbench_vms(simulator) == {}


def test_default_ova_insecure_said_kept_vm_cleaned_by_vm_clean(simulator, archive_here, ova, tmp_path, monkeypatch):
    """Without `ova`, the target deploys the OVA named after the current guest image's inputs, where it exports one
    when missing (placed there here: building the guest image is the QEMU tests' work). insecure = true is said in
    run.json; keep = true leaves the VM powered off, `vm clean` removes it."""
    from bench.targets.vm.export import default_ova_path

    monkeypatch.setenv("PACSBENCH_VM_CACHE", str(tmp_path / "vm-cache"))
    path = default_ova_path()
    assert path.parent == tmp_path / "vm-cache" / "export" and path.suffix == ".ova"
    path.parent.mkdir(parents=True)
    path.write_bytes(ova.read_bytes())
    target = esxi_target(simulator, archive_here, ova, insecure=True, keep=True)
    del target["ca_file"], target["ova"]
    scenario = write_scenario(tmp_path / "esxi.toml", target, duration=1)
    with VmwareTools(simulator):
        result = pacsbench(simulator, "run", scenario, "--results", tmp_path / "r", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((run_dir_of(result) / "run.json").read_text())
    assert run["target"]["esxi"]["insecure"] is True and "NOT VERIFIED" in run["target"]["esxi"]["tls"]
    assert any("TLS not verified" in w for w in run["warnings"])
    build_report(run_dir_of(result))
    assert "TLS NOT VERIFIED (insecure = true)" in (run_dir_of(result) / "summary.md").read_text()
    kept = pacsbench_vms(simulator)
    assert list(kept.values()) == ["poweredOff"]

    clean = pacsbench(simulator, "vm", "clean", "--target", scenario)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.split() == list(kept)
    assert pacsbench_vms(simulator) == {}


def test_matrix_native_and_esxi_is_compared_under_one_budget(simulator, archive_here, ova, tmp_path):
    """scenarios/esxi.toml's target, pointed at the simulator, in a matrix with native (two repetitions, the order
    rotated): the same budget for both."""
    shipped = tomllib.loads((ROOT / "scenarios" / "esxi.toml").read_text())["target"]
    target = {**shipped, **esxi_target(simulator, archive_here, ova)}
    del target["password_env"]  # the shipped name, with the password the test's simulator takes
    scenario = write_scenario(tmp_path / "esxi.toml", target, duration=2)
    with VmwareTools(simulator):
        result = pacsbench(
            simulator, "matrix", scenario, "--targets", "native,esxi", "--repeat", "2", "--results", tmp_path / "m",
            "--no-progress",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run_dir_of(result)
    matrix = json.loads((folder / "matrix.json").read_text())
    # The order rotates per repetition (A B, then B A), so neither target always runs first.
    assert [(r["target"], r["repetition"]) for r in matrix["runs"]] == [
        ("native", 1),
        ("esxi", 1),
        ("esxi", 2),
        ("native", 2),
    ]
    assert all(r["status"] == "completed" for r in matrix["runs"])
    compare = pacsbench(simulator, "compare", folder, "--out", tmp_path / "compare")
    assert compare.returncode == 0, compare.stderr[-2000:]
    summary = json.loads((tmp_path / "compare" / "summary.json").read_text())
    budgets = {g["target"]: g["budget"] for g in summary["groups"]}
    assert budgets["esxi"]["enforced_by"] == "esxi-vm" and budgets["native"]["enforced_by"] != "none"
    assert {(b["cpus"], b["memory_bytes"]) for b in budgets.values()} == {(2, 2048 << 20)}
    assert summary["budgets_note"] is None
    assert pacsbench_vms(simulator) == {}


def test_a_pinned_thumbprint_is_trusted_and_another_is_refused(simulator, monkeypatch):
    from bench.common.errors import UserError
    from bench.scenario.targets import target_spec
    from bench.targets.esxi.connection import connect

    monkeypatch.setenv(sim.PASSWORD_ENV, simulator.password)
    settings = {k: v for k, v in simulator.target().items() if k != "ca_file"}
    for pin in (simulator.thumbprint_sha1, simulator.thumbprint_sha256):
        session = connect(target_spec({**settings, "thumbprint": pin}))
        assert session.content.about.apiType == "HostAgent"
        session.close()
    with pytest.raises(UserError, match="does not match the pinned thumbprint"):
        connect(target_spec({**settings, "thumbprint": "AB" * 20}))


def test_on_a_vcenter_the_vm_goes_to_the_named_cluster_and_host_and_leaves_nothing(vcsim, ova, tmp_path, monkeypatch):
    """The vCenter path without a run: placement by datacenter, cluster and host, deploy, budget, power, destroy."""
    from bench.scenario.targets import target_spec
    from bench.targets.esxi import connection, deploy, machine

    vcenter = sim.start(vcsim, tmp_path, vpx=True)
    try:
        monkeypatch.setenv(sim.PASSWORD_ENV, vcenter.password)
        spec = target_spec(vcenter.target(datacenter="DC0", cluster="DC0_C0", esxi_host="DC0_C0_H1", cpus=1))
        session = connection.connect(spec)
        place = connection.placement(session)
        facts = connection.server_facts(session, place)
        assert facts["api_type"] == "VirtualCenter" and facts["esxi_host"] == "DC0_C0_H1" and facts["simulator"]
        vm = deploy.deploy(session, deploy.read_ova(ova), place, "pacsbench-test", machine.annotation("test"), False)
        settings = machine.reconfigure(vm, 1, 1024, {"port": "11112"}, 8)
        assert settings["guestinfo"] == {"guestinfo.pacsbench.port": "11112"}
        machine.power_on(vm)
        described = machine.vm_facts(vm)
        assert (described["vcpus"], described["memory_mib"], described["memory_reservation_mib"]) == (1, 1024, 1024)
        assert vm.runtime.host.name == "DC0_C0_H1" and vm.runtime.powerState == "poweredOn"
        assert [facts for _, facts in machine.pacsbench_vms(session)][0]["run"] == "test"
        assert machine.remove(vm) and machine.pacsbench_vms(session) == []
        session.close()
    finally:
        vcenter.stop()
