"""`run --verify-protocol dicomweb` against a target without DICOMweb is one line before anything starts
(tests/runs/test_end_to_end.py verifies the smoke run by WADO-RS)."""

import subprocess
import sys

from helpers import ROOT

DCMTK_SCENARIO = """name = "verify-by-wado"
[target]
kind = "dcmtk"
fsync = false
[studies]
profile = "tiny"
pool = 2
seed = 1
[load]
users = 1
duration = 2
"""


def test_verifying_by_wado_rs_a_target_without_dicomweb_is_one_line(tmp_path):
    scenario, results = tmp_path / "dcmtk.toml", tmp_path / "results"
    scenario.write_text(DCMTK_SCENARIO)
    command = [sys.executable, "-m", "bench.cli", "run", str(scenario), "--results", str(results)]
    result = subprocess.run([*command, "--verify-protocol", "dicomweb"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--verify-protocol dicomweb: the dcmtk target has no DICOMweb side" in result.stderr
    assert not results.exists() or not any(results.iterdir())
