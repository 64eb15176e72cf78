"""`run --verify-protocol dicomweb`: the run's archive serves DICOMweb for it and every acknowledged instance comes
back by WADO-RS before the archive stops (the way a guest's run is verified by WADO-RS: its data goes with it);
a target without DICOMweb is one line before anything starts."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

SCENARIO = """name = "verify-by-wado"
[target]
kind = "{kind}"
fsync = false
[studies]
profile = "tiny"
pool = 2
seed = 1
[load]
users = 1
duration = 2
"""


def pacsbench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def scenario(folder: Path, kind: str) -> Path:
    path = folder / f"{kind}.toml"
    path.write_text(SCENARIO.format(kind=kind))
    return path


@pytest.mark.slow  # a real run of the load engine against the archive
def test_a_run_verified_by_wado_rs_serves_dicomweb_for_it(tmp_path):
    results = tmp_path / "results"
    result = pacsbench("run", scenario(tmp_path, "native"), "--results", results, "--verify-protocol", "dicomweb")
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    verify = run["verify"]
    assert verify["ok"] and verify["protocol"] == "WADO-RS" and verify["instances"] == verify["returned"] > 0
    assert verify["target"] == run["target"]["dicomweb_url"] and run["target"]["dicomweb_url"].endswith("/dicom-web")


def test_verifying_by_wado_rs_a_target_without_dicomweb_is_one_line(tmp_path):
    results = tmp_path / "results"
    result = pacsbench("run", scenario(tmp_path, "dcmtk"), "--results", results, "--verify-protocol", "dicomweb")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--verify-protocol dicomweb: the dcmtk target has no DICOMweb side" in result.stderr
    assert not results.exists() or not any(results.iterdir())
