"""What a target says about itself: the hypervisor it asked for and the one found, the guest's kernel command
line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.scenario.settings import ClientSpec
from bench.scenario.targets import RemoteSpec
from bench.targets.probes import hypervisor_warning
from bench.targets.remote import RemoteTarget
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
    from server_under_test.config import load_config

    loaded = load_config(config)
    assert (loaded.port, loaded.ae_title, loaded.fsync, loaded.host) == (104, "VMARCH", False, "0.0.0.0")
    assert (loaded.metrics.host, loaded.metrics.port) == ("0.0.0.0", 8080)


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
