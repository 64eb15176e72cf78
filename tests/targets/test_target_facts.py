"""What a target says about itself: the hypervisor it asked for and the one found, the guest's kernel command
line and DICOMweb port; what the guest image carries for the archive's imports."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from bench.common.errors import UserError
from bench.common.processes import free_local_port
from bench.scenario.file import Scenario, dicomweb_gap, with_dicomweb
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import RemoteSpec, target_spec
from bench.targets import make_target
from bench.targets.guest_settings import guest_settings
from bench.targets.probes import archive_facts, hypervisor_warning, wait_for_dicomweb
from bench.targets.remote import RemoteTarget
from bench.targets.vm.image import GuestImage, python_versions, server_package
from bench.targets.vm.network import UserNetwork
from bench.targets.vm.qemu import Machine, Qemu
from server_under_test.config import load_config
from server_under_test.environment import detect_hypervisor
from server_under_test.guest import archive_config, kernel_settings


def test_a_hypervisor_the_archive_does_not_confirm_is_a_warning():
    assert hypervisor_warning({"label": "vbox", "requested_hypervisor": "VirtualBox", "hypervisor": "oracle"}) is None
    assert (
        hypervisor_warning({"label": "esx", "requested_hypervisor": "esxi", "hypervisor": "kvm"})
        == "target esx: asked for hypervisor 'esxi' but the archive detected 'kvm'"
    )
    assert hypervisor_warning({"label": "x", "requested_hypervisor": "kvm"}) is None  # nothing detected: no claim


def test_guest_settings_come_from_the_kernel_command_line(tmp_path):
    settings = kernel_settings(
        "root=LABEL=pbroot ro pacsbench.port=104 pacsbench.aet=VMARCH pacsbench.fsync=0 pacsbench.ip=10.0.2.15/24 quiet"
    )
    assert settings == {"port": "104", "aet": "VMARCH", "fsync": "0", "ip": "10.0.2.15/24"}
    config = tmp_path / "archive.toml"
    config.write_text(archive_config(settings, Path("/var/lib/pacsbench/data")))
    loaded = load_config(config)
    assert (loaded.port, loaded.ae_title, loaded.fsync, loaded.host) == (104, "VMARCH", False, "0.0.0.0")
    assert (loaded.metrics.host, loaded.metrics.port) == ("0.0.0.0", 8080)
    assert loaded.dicomweb.port == 8042  # the guest's default: DICOMweb on, on the DICOM host
    config.write_text(archive_config({**settings, "dicomweb_port": "0"}, Path("/var/lib/pacsbench/data")))
    assert load_config(config).dicomweb is None


def test_a_guest_serves_dicomweb_when_the_run_has_dicomweb_users(tmp_path):
    """kvm, tcg, esxi and virtualbox have a DICOMweb side (dcmtk says in one line it has none); a QEMU guest is told
    its port on the kernel command line, and user-mode networking forwards it to a free 127.0.0.1 port."""

    def scenario(target: dict, users: dict) -> Scenario:
        return Scenario.model_validate(
            {"target": target, "studies": {"profile": "tiny"}, "load": {"duration": 1}, "users": users}
        )

    web_users = {"stow": {"count": 1}}
    for kind in ("kvm", "tcg", "virtualbox"):
        assert dicomweb_gap(scenario({"kind": kind}, web_users)) is None
    esxi = {"kind": "esxi", "host": "esx", "user": "root", "datastore": "ds"}
    assert dicomweb_gap(scenario(esxi, web_users)) is None
    assert dicomweb_gap(scenario({"kind": "dcmtk", "fsync": False}, web_users)) == (
        "[users.stow]: the dcmtk target has no DICOMweb side"
    )
    tcg = with_dicomweb(scenario({"kind": "tcg"}, web_users)).target
    assert tcg.dicomweb is True and make_target(tcg, ClientSpec()).settings()["dicomweb_port"] == "8042"
    assert with_dicomweb(scenario({"kind": "tcg"}, {"modality": {"count": 1}})).target.dicomweb is False
    assert guest_settings(target_spec(esxi), 104, 8080, 9042)["dicomweb_port"] == "0"  # off: as native, no DICOMweb
    assert guest_settings(target_spec({**esxi, "dicomweb": True}), 104, 8080, 9042)["dicomweb_port"] == "9042"

    network = UserNetwork(dicomweb=True)
    guest = Qemu(GuestImage(tmp_path), Machine(), network, tmp_path, make_target(tcg, ClientSpec()).settings())
    assert "pacsbench.dicomweb_port=8042" in guest.kernel_cmdline().split()
    assert f"hostfwd=tcp:127.0.0.1:{network.dicomweb_port}-:8042" in " ".join(guest.build_command())
    assert network.dicomweb_url == f"http://127.0.0.1:{network.dicomweb_port}/dicom-web"
    assert UserNetwork().dicomweb_url is None and "8042" not in UserNetwork().qemu_args("virtio-net-pci")[1]


def test_a_guest_asked_for_dicomweb_that_does_not_answer_is_one_line():
    """What an image without DICOMweb (or a forward to nothing) gives: the target's start fails in one line."""
    url = f"http://127.0.0.1:{free_local_port()}/dicom-web"
    with pytest.raises(UserError) as failed:
        wait_for_dicomweb(url, 1.0)
    assert str(failed.value) == f"the archive's DICOMweb side at {url} did not answer within 1 s"
    wait_for_dicomweb(None, 1.0)  # not asked for: nothing to wait for


def imported_distributions(package: Path) -> set[str]:
    """The distributions (PyPI names) whose modules the package's files import, outside the standard library."""
    modules = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
    modules -= set(sys.stdlib_module_names) | {package.name}
    owners = metadata.packages_distributions()
    return {canonicalize_name(owners[module][0]) for module in modules}


def test_the_guest_image_carries_every_distribution_the_archive_imports():
    """What server_under_test imports (aiohttp for DICOMweb, ...) and what those require, pinned to the versions
    here: a new import without its package in the image would boot a guest whose archive cannot start."""
    carried = python_versions()
    assert imported_distributions(server_package()) <= set(carried)
    assert {"aiohttp", "multidict", "yarl", "pydicom"} <= set(carried)
    assert carried["aiohttp"] == metadata.version("aiohttp") and carried["yarl"] == metadata.version("yarl")


def test_a_declared_hypervisor_is_never_recorded_as_detected():
    remote = RemoteTarget(RemoteSpec(port=104, hypervisor="esxi"), ClientSpec())
    labels = {k: remote.describe()[k] for k in ("hypervisor", "declared_hypervisor", "hypervisor_source")}
    assert labels == {
        "hypervisor": "unknown",
        "declared_hypervisor": "esxi",
        "hypervisor_source": "not detected (metrics_url /status gave no answer)",
    }
    assert hypervisor_warning({"label": "x", "requested_hypervisor": "esxi", "hypervisor": "unknown"}) is None


def test_the_vm_layer_and_the_container_layer_are_told_apart():
    """Here a KVM guest running the harness in a docker container: hypervisor kvm, container docker."""
    tool = shutil.which("systemd-detect-virt")
    if not tool:
        pytest.skip("systemd-detect-virt not installed")
    vm, container = (
        subprocess.run([tool, f"--{layer}"], capture_output=True, text=True).stdout.strip()
        for layer in ("vm", "container")
    )
    found = detect_hypervisor()
    assert found["container"] == container
    if vm != "none":
        assert (found["hypervisor"], found["detected_by"]) == (vm, "systemd-detect-virt")


@pytest.mark.parametrize(
    ("journal", "disk"), [(True, "vda ext4"), (False, "vda ext4 (no journal)"), (None, "vda ext4")]
)
def test_the_report_names_an_ext4_data_disk_without_a_journal(journal, disk):
    storage = {"device": "vda", "fs_type": "ext4", "fs_journal": journal}
    assert archive_facts({"environment": {"hypervisor": "kvm", "storage": [storage]}})["disk"] == disk
