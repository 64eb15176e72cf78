"""Target kinds through the one Target type, against the real programs: start, C-ECHO, describe, stop."""

from __future__ import annotations

import sys

import pytest
from conftest import require_tool

from bench.common.errors import UserError
from bench.common.processes import free_local_port
from bench.dicom.peer import AssociationFailed, Peer, echo_once
from bench.dicom.readiness import NoEchoAnswer
from bench.load.scenario import ClientSpec, TargetSpec
from bench.targets import Target, make_target
from bench.targets.archive_process import ArchiveProcess

INSTALLED = {"orthanc": ("Orthanc", "orthanc"), "dcmtk": ("/usr/bin/dcmqrscp", "dcmtk")}


@pytest.mark.parametrize("kind", ["native", pytest.param("orthanc", marks=pytest.mark.slow), "dcmtk"])
def test_a_local_target_answers_c_echo_describes_itself_and_stops(kind, tmp_path):
    if kind in INSTALLED:
        require_tool(*INSTALLED[kind])
    target = make_target(TargetSpec(kind=kind), ClientSpec())
    assert isinstance(target, Target)
    try:
        target.start(tmp_path)
        echo_once(target.peer)
        assert target.ready_seconds is not None and 0 < target.ready_seconds < 30
    finally:
        target.stop()
    target.stop()  # twice is harmless (a run's `finally` may follow a failed start)
    described = target.describe()
    assert described["kind"] == kind and described["label"] == kind
    assert described["port"] == target.peer.port and described["ready_seconds"] == target.ready_seconds
    assert described["hypervisor"]
    assert not list(tmp_path.glob("*/storage/*")), "the images go when keep_data is false"
    with pytest.raises(AssociationFailed):  # stopped: nothing answers any more
        echo_once(target.peer, timeout=2)


def test_native_target_writes_the_c_move_destinations_into_the_archive_config(tmp_path):
    target = make_target(TargetSpec(kind="native"), ClientSpec())
    target.destinations = {"WORKSTATION": ("127.0.0.1", 11113)}
    try:
        target.start(tmp_path)
    finally:
        target.stop()
    assert '[destinations."WORKSTATION"]' in (tmp_path / "archive.toml").read_text()
    assert target.describe()["destinations"] == {"WORKSTATION": "127.0.0.1:11113"}


def test_a_process_that_exits_before_answering_is_one_line_naming_its_log(tmp_path):
    log = tmp_path / "sink.log"
    command = [sys.executable, "-c", "import sys; print('cannot open the storage folder'); sys.exit(3)"]
    archive = ArchiveProcess(command, Peer("127.0.0.1", free_local_port(), "SINK"), log)
    with pytest.raises(NoEchoAnswer) as failure:
        archive.start("PACSBENCH", timeout=20)
    assert isinstance(failure.value, UserError)
    assert "cannot open the storage folder" in str(failure.value) and str(log) in str(failure.value)
    assert archive.exit_code == 3
