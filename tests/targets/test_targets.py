"""Target kinds through the one Target type, against the real programs: start, C-ECHO, describe, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tools import installed_kinds, require_kind, require_tool

from bench.common.errors import UserError
from bench.common.processes import free_local_port
from bench.dicom.peer import AssociationFailed, Peer, echo_once
from bench.dicom.readiness import NoEchoAnswer
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import NativeSpec, target_spec
from bench.targets import Target, make_target
from bench.targets.archive_process import ArchiveProcess


@pytest.mark.parametrize("kind", installed_kinds("native", "orthanc", "dcmtk"))
def test_a_local_target_answers_c_echo_describes_itself_and_stops(kind, tmp_path):
    require_kind(kind)
    target = make_target(target_spec({"kind": kind}), ClientSpec())
    assert isinstance(target, Target)
    folders = []
    try:
        target.start(tmp_path)
        echo_once(target.peer)
        assert target.ready_seconds is not None and 0 < target.ready_seconds < 30
        folders = list(target.budget.folders)
        placed = Path(f"/proc/{target.server_pid()}/cgroup").read_text()
        assert placed.count(target.budget.name) == len(folders)  # in every cgroup of its budget
    finally:
        target.stop()
    assert not any(folder.exists() for folder in folders)  # removed with the archive
    target.stop()  # twice is harmless (a run's `finally` may follow a failed start)
    described = target.describe()
    assert described["kind"] == kind and described["label"] == kind
    assert described["port"] == target.peer.port and described["ready_seconds"] == target.ready_seconds
    assert described["hypervisor"]
    assert described["budget"]["cpus"] == 2 and described["budget"]["memory_bytes"] == 2048 << 20
    if os.geteuid() == 0:
        assert described["budget"]["enforced_by"] in ("cgroup-v1", "cgroup-v2")
    assert not list(tmp_path.glob("*/storage/*")), "the images go when keep_data is false"
    with pytest.raises(AssociationFailed):  # stopped: nothing answers any more
        echo_once(target.peer, timeout=2)


def test_native_target_writes_the_c_move_destinations_into_the_archive_config(tmp_path):
    target = make_target(NativeSpec(), ClientSpec())
    target.destinations = {"WORKSTATION": ("127.0.0.1", 11113)}
    try:
        target.start(tmp_path)
    finally:
        target.stop()
    assert '[destinations."WORKSTATION"]' in (tmp_path / "archive.toml").read_text()
    assert target.describe()["destinations"] == {"WORKSTATION": "127.0.0.1:11113"}


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout


def _namespaces() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout.split()


def test_a_native_archive_for_network_faults_listens_in_its_own_namespace_cut_off_by_the_veth(root, tmp_path):
    """Taking the veth's host end down cuts the archive off; up again, it answers; stop removes namespace and veth."""
    require_tool("ip", "iproute2")
    target = make_target(NativeSpec(), ClientSpec(), in_namespace=True)
    target.destinations = {"WORKSTATION": ("127.0.0.1", 11113)}
    try:
        target.start(tmp_path)
        ns = target.namespace
        assert target.peer.host == ns.peer_ip and ns.name in _namespaces()
        assert f"{ns.host_veth}@" in _links()
        echo_once(target.peer)
        placed = Path(f"/proc/{target.server_pid()}/cgroup").read_text()
        assert placed.count(target.budget.name) == len(target.budget.folders) > 0  # still in its budget
        assert os.readlink(f"/proc/{target.server_pid()}/ns/net") != os.readlink("/proc/self/ns/net")
        assert target.status, "the archive's status page is reached over the veth"
        target.set_network(False)
        with pytest.raises(AssociationFailed):
            echo_once(target.peer, timeout=1)
        target.set_network(True)
        echo_once(target.peer)
        first_pid = target.server_pid()
        target.signal_archive(signal.SIGKILL)  # a kill fault: started again in the same namespace
        assert target.wait_for_exit(10) == -9
        target.start_again()
        echo_once(target.peer)
        assert target.server_pid() != first_pid and target.peer.host == ns.peer_ip
    finally:
        target.stop()
    assert ns.name not in _namespaces() and f"{ns.host_veth}@" not in _links()
    described = target.describe()
    assert described["network"] == "veth into a namespace of its own (for network-down faults)"
    assert described["namespace"]["host_veth"] == ns.host_veth and described["host"] == ns.peer_ip
    # the archive reaches a loopback C-MOVE destination at the veth's host end
    assert described["destinations"] == {"WORKSTATION": f"{ns.host_ip}:11113"}
    assert f'host = "{ns.host_ip}"' in (tmp_path / "archive.toml").read_text()


def test_a_failed_start_in_a_namespace_leaves_no_namespace_or_veth(root, tmp_path):
    require_tool("ip", "iproute2")
    (tmp_path / "archive").write_text("a file where the data folder goes: the archive cannot start")
    target = make_target(NativeSpec(), ClientSpec(), in_namespace=True)
    with pytest.raises(UserError, match="native archive did not start"):
        target.start(tmp_path)
    assert target.namespace.name not in _namespaces() and f"{target.namespace.host_veth}@" not in _links()


def test_a_process_that_exits_before_answering_is_one_line_naming_its_log(tmp_path):
    log = tmp_path / "sink.log"
    command = [sys.executable, "-c", "import sys; print('cannot open the storage folder'); sys.exit(3)"]
    archive = ArchiveProcess(command, Peer("127.0.0.1", free_local_port(), "SINK"), log)
    with pytest.raises(NoEchoAnswer) as failure:
        archive.start("PACSBENCH", timeout=20)
    assert isinstance(failure.value, UserError)
    assert "cannot open the storage folder" in str(failure.value) and str(log) in str(failure.value)
    assert archive.exit_code == 3
