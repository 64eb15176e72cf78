"""Orthanc and dcmqrscp configured like the archive they are compared with: PDU size, C-MOVE
destinations, durability stated; a setting a kind cannot honour is an error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.common.errors import UserError
from bench.dicom.peer import echo_once
from bench.results.samples import done_mask
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import DcmtkSpec, NativeSpec, target_spec
from bench.targets import make_target

WORKSTATION_SCENARIO = """
name = "peers-reading"
[target]
kind = "{kind}"
max_pdu = 65536
[studies]
profile = "tiny"
pool = 2
prefill = 3
[load]
duration = 6
stop_timeout = 20
[users.workstation]
count = 2
retrieve = "move"
reading_images_per_s = 200
"""


def pacsbench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def test_dcmqrscp_gets_the_pdu_size_and_the_c_move_destinations(dcmtk, tmp_path):
    dcmtk.require("dcmqrscp")
    target = make_target(DcmtkSpec(max_pdu=32768), ClientSpec())
    target.destinations = {"PACSBENCH-SCP": ("127.0.0.1", 11113)}
    try:
        target.start(tmp_path)
        echo_once(target.peer)
    finally:
        target.stop()
    config = (tmp_path / "dcmtk" / "dcmqrscp.cfg").read_text()
    assert "MaxPDUSize = 32768" in config and "(PACSBENCH-SCP, 127.0.0.1, 11113)" in config
    described = target.describe()
    assert described["fsync"] is False and described["max_pdu"] == 32768
    assert described["destinations"] == {"PACSBENCH-SCP": "127.0.0.1:11113"}


def test_settings_a_peer_cannot_honour_are_errors():
    with pytest.raises(UserError, match="cannot fsync"):
        make_target(DcmtkSpec(fsync=True), ClientSpec())
    make_target(DcmtkSpec(fsync=False), ClientSpec())  # what it does anyway: accepted
    for kind in ("orthanc", "dcmtk"):
        with pytest.raises(ValueError, match="takes 4096 to 131072 bytes"):
            target_spec({"kind": kind, "max_pdu": 1 << 20})


def test_a_scenario_asking_dcmtk_to_fsync_is_one_line_exit_2(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(WORKSTATION_SCENARIO.format(kind="dcmtk").replace("max_pdu = 65536", "fsync = true"))
    result = pacsbench("run", scenario, "--results", tmp_path / "results", "--no-progress")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "cannot fsync" in result.stderr


def test_workstations_retrieve_studies_from_orthanc_with_the_native_pdu_size(orthanc, tmp_path):
    scenario = tmp_path / "reading.toml"
    scenario.write_text(WORKSTATION_SCENARIO.format(kind="orthanc"))
    result = pacsbench("run", scenario, "--results", tmp_path / "results", "--no-progress")
    assert result.returncode == 0, result.stderr
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    run = json.loads((run_dir / "run.json").read_text())
    native_pdu = NativeSpec(**{**run["scenario"]["target"], "kind": "native"}).max_pdu  # native's --max-pdu
    assert run["target"]["max_pdu"] == native_pdu == 65536
    assert json.loads((run_dir / "orthanc" / "orthanc.json").read_text())["MaximumPduLength"] == 65536
    assert run["target"]["fsync"] is True and "PACSBENCH-SCP" in run["target"]["destinations"]
    samples = pd.read_csv(run_dir / "samples.csv")
    moves = samples[samples["operation"] == "C-MOVE"]
    assert (samples["operation"] == "C-FIND").any()
    assert len(moves) and done_mask(moves["status"]).all() and moves["instances"].sum() > 0
