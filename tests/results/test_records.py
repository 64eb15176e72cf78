"""Run-folder records: written and read through their models, strict about field names, and a folder of the
previous release (no schema_version) read by `report` and `compare`, or refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields

import pytest
from pydantic import BaseModel, ValidationError
from synthetic import write_run

from bench.common.errors import UserError
from bench.results.record_base import SCHEMA_VERSION, read_record, write_record
from bench.results.records import RECORD_MODELS, MatrixRecord, SampleRow
from bench.results.run_file import read_run_json, write_run_json
from bench.results.run_record import RunRecord, TargetRecord
from bench.results.samples import Sample

# run.json as the previous release wrote it (no schema_version): the parts report and compare read.
PREVIOUS_RELEASE_RUN = {
    "status": "completed",
    "scenario_file": "scenarios/smoke.toml",
    "load_processes": {"mode": "local", "local_workers": 0, "remote_workers": 0},
    "calibration": {
        "matched": False,
        "fingerprint": {"profile": "tiny"},
        "closest": None,
        "note": "no matching calibration (the cached ones have no fingerprint)",
    },
    "versions": {"pacsbench": "0.1.0", "gevent": None},
    "command": ["pacsbench", "run", "scenarios/smoke.toml"],
    "target": {
        "kind": "native",
        "label": "native",
        "hypervisor": "none",
        "declared_hypervisor": None,
        "hypervisor_source": "detected (the archive's /status)",
        "network": "loopback",
        "port": 11112,
        "fsync": True,
        "max_pdu": 0,
        "storage_kept": False,
        "destinations": {},
        "budget": {
            "cpus": 2,
            "memory_bytes": 2147483648,
            "enforced_by": "affinity",
            "controllers": [],
            "cpu_ids": [0, 1],
        },
        "environment": {
            "hypervisor": "none",
            "vcpus": 2,
            "memory_bytes": 4294967296,
            "storage": [{"path": "/r", "device": "sda", "fs_type": "ext4"}],
        },
    },
    "warnings": [],
    "started": "2023-11-14T22:13:20.000+00:00",
    "suboperations": {},
}


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


def previous_release_folder(folder, **changes):
    """A run folder whose run.json is written as the previous release wrote it: plain JSON, no schema_version."""
    write_run(folder)
    run = json.loads((folder / "run.json").read_text())
    run.pop("schema_version")
    (folder / "run.json").write_text(json.dumps(run | PREVIOUS_RELEASE_RUN | changes))
    return folder


def test_a_folder_of_the_previous_release_is_read_by_report_and_compare(tmp_path):
    first = previous_release_folder(tmp_path / "a")
    second = previous_release_folder(tmp_path / "b")
    matrix = tmp_path / "m"
    matrix.mkdir()
    (matrix / "matrix.json").write_text(
        json.dumps(
            {
                "scenario": "synthetic",
                "runs": [
                    {"folder": str(first), "target": "native", "repetition": 1},
                    {"folder": str(second), "target": "native", "repetition": 2},
                ],
            }
        )
    )
    report = pacsbench("report", first)
    assert report.returncode == 0, report.stderr
    summary = json.loads((first / "summary.json").read_text())
    assert summary["schema_version"] == SCHEMA_VERSION and summary["environment"]["budget"].startswith("2 CPUs")
    compare = pacsbench("compare", matrix, "--out", tmp_path / "cmp")
    assert compare.returncode == 0, compare.stderr
    assert [g["repetitions"] for g in json.loads((tmp_path / "cmp" / "summary.json").read_text())["groups"]] == [2]


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"schema_version": 99}, "run.json: schema_version 99 is not one this pacsbench reads"),
        (
            {"target": {"kind": "native", "vcpu_count": 2}},
            "run.json: not a run record of schema_version 0: target.vcpu_count: Extra inputs are not permitted",
        ),
    ],
)
def test_a_run_json_this_release_cannot_read_is_refused_in_one_line_naming_file_and_version(
    tmp_path, changes, expected
):
    folder = previous_release_folder(tmp_path / "r", **changes)
    for verb in (["report", folder], ["compare", folder, "--out", tmp_path / "cmp"]):
        result = pacsbench(*verb)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"{folder}/{expected}" in result.stderr
    assert not (folder / "summary.json").exists() and not (tmp_path / "cmp").exists()


def test_a_misspelt_field_fails_where_it_is_written_and_where_it_is_read(tmp_path):
    with pytest.raises(ValidationError, match="stauts"):
        RunRecord(run_id="r", stauts="completed")
    record = RunRecord(run_id="r", status="completed", target=TargetRecord(kind="native"))
    with pytest.raises(ValidationError, match="fsnyc"):
        record.target.fsnyc = True
    with pytest.raises(ValidationError):
        record.samples = "many"  # a wrong type fails on assignment too
    (tmp_path / "run.json").write_text(
        json.dumps({"schema_version": SCHEMA_VERSION, "run_id": "r", "status": "completed", "calibraton": {}})
    )
    with pytest.raises(UserError, match=r"run.json: not a run record of schema_version 1: calibraton: Extra inputs"):
        read_run_json(tmp_path)
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"scenario": "s", "runs": [{"folder": "a", "targte": "native"}]}))
    with pytest.raises(UserError, match=r"matrix.json: not a matrix record of schema_version 0: runs.0.target: Field"):
        read_record(MatrixRecord, matrix, "a matrix record")


def test_a_record_written_is_read_back_equal_and_carries_its_schema_version(tmp_path):
    run_dir = write_run(
        tmp_path / "r",
        run_extra={
            "target": {
                "kind": "kvm",
                "label": "guest",
                "budget": {"cpus": 2, "memory_bytes": 1 << 30, "enforced_by": "guest"},
            },
            "faults": [
                {"action": "kill", "at": 3.0, "happened": True, "lost": 0, "failed_by_status": {"no response": 2}}
            ],
        },
    )
    record = read_run_json(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert record.target.budget.cpus == 2 and record.faults[0].failed_by_status == {"no response": 2}
    write_run_json(tmp_path, record)
    assert read_run_json(tmp_path) == record
    assert "verify" not in json.loads((tmp_path / "run.json").read_text())  # a part never set stays out


@pytest.mark.parametrize("name", list(RECORD_MODELS))
def test_every_field_of_every_record_is_described_for_the_reference(name):
    """The run-folder reference is generated from these schemas: a field without a description is a blank line."""
    model = RECORD_MODELS[name]
    schema = model.model_json_schema()
    undescribed = [
        f"{title}.{field}"
        for title, fields_ in _object_schemas(schema)
        for field, spec in fields_.items()
        if not spec.get("description")
    ]
    assert undescribed == [] and issubclass(model, BaseModel)


def _object_schemas(schema: dict):
    yield schema["title"], schema["properties"]
    for definition in schema.get("$defs", {}).values():
        if "properties" in definition:
            yield definition["title"], definition["properties"]


def test_the_sample_rows_reference_has_the_columns_of_samples_csv():
    assert list(SampleRow.model_fields) == [f.name for f in fields(Sample)]


def test_a_baseline_written_is_read_back(tmp_path):
    from bench.analysis.aggregate import Settings
    from bench.analysis.gate import load_baseline, save_baseline

    out = save_baseline([write_run(tmp_path / "r")], tmp_path / "baseline.json", Settings())
    saved = json.loads(out.read_text())
    assert saved["schema_version"] == SCHEMA_VERSION and set(saved["metrics"]) >= {"ingest_instances_per_s"}
    baseline = load_baseline(out, Settings())
    assert baseline.scenario == "synthetic" and "ingest_instances_per_s" in baseline.metrics
    write_record(tmp_path / "again.json", baseline, indent=None)
    assert load_baseline(tmp_path / "again.json", Settings()) == baseline
    previous = {key: value for key, value in saved.items() if key != "schema_version"} | {"format": 1}
    (tmp_path / "previous.json").write_text(json.dumps(previous))  # as the previous release saved it
    assert load_baseline(tmp_path / "previous.json", Settings()).metrics == baseline.metrics
