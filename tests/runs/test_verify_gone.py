"""`verify` on a run whose archive's data is gone says so (exit 2) and never overwrites an earlier result."""

import json
import subprocess
import sys

import pytest

from bench.results.run_file import read_run_json, write_run_json
from bench.results.run_record import RunRecord, VerifyRecord
from bench.runs.verify import record_result

EARLIER = VerifyRecord(ok=True, target="X", instances=12, studies=2, returned=12, missing=0, different=0)
LATER = VerifyRecord(ok=False, target="X", instances=12, studies=2, returned=0, missing=12, different=0)


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("kind", ["kvm", "tcg", "orthanc", "dcmtk"])
def test_verify_of_a_target_whose_data_is_gone_is_exit_2_and_keeps_the_earlier_result(tmp_path, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run_json(
        run_dir,
        RunRecord.model_validate(
            {
                "run_id": "run",
                "status": "completed",
                "scenario": {"target": {"kind": kind}},
                "target": {
                    "kind": kind,
                    "host": "127.0.0.1",
                    "port": 1,
                    "ae_title": "X",
                    **({"storage_kept": False} if kind in ("orthanc", "dcmtk") else {}),
                },
                "verify": EARLIER,
            }
        ),
    )
    (run_dir / "sent.csv").write_text("sop_instance_uid,study_instance_uid,digest\n1.2.3,1.2,abc\n")
    before = (run_dir / "run.json").read_text()
    result = pacsbench("verify", run_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "nothing left to verify" in result.stderr and kind in result.stderr
    assert (run_dir / "run.json").read_text() == before and not (run_dir / "verify.json").exists()


def test_an_unreachable_archive_records_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_run_json(
        run_dir,
        RunRecord.model_validate(
            {
                "run_id": "run",
                "status": "completed",
                "scenario": {"target": {"kind": "remote"}},
                "target": {"kind": "remote", "host": "127.0.0.1", "port": 9, "ae_title": "X"},
            }
        ),
    )
    (run_dir / "sent.csv").write_text(
        "sop_instance_uid,study_instance_uid,sop_class_uid,transfer_syntax_uid,digest\n"
        "1.2.3,1.2,1.2.840.10008.5.1.4.1.1.12.1,1.2.840.10008.1.2.1,abc\n"
    )
    result = pacsbench("verify", run_dir)
    assert result.returncode == 2 and "nothing recorded" in result.stderr, result.stderr
    assert read_run_json(run_dir).verify is None


def test_a_later_verification_goes_beside_the_first(tmp_path):
    write_run_json(tmp_path, RunRecord(run_id="run", status="completed"))
    record_result(tmp_path, EARLIER)
    record_result(tmp_path, LATER)
    record = read_run_json(tmp_path)
    assert record.verify == EARLIER and record.verify_later == [LATER]
    assert json.loads((tmp_path / "verify.json").read_text())["missing"] == 0
    assert json.loads((tmp_path / "verify-2.json").read_text())["missing"] == 12
