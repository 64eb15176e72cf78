import json
import subprocess
import sys

import pytest

from bench.errors import UserError
from bench.report import build_report, load_samples, summarize, timeline
from bench.samples import Sample, SampleWriter


def _synthetic_run(folder, rate_per_s=20.0, seconds=10, failures=0, scenario_name="synthetic"):
    """A run folder whose samples arrive at a known rate: 1 MB, 4 frames per instance."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = SampleWriter(folder / "samples.csv")
    t0 = 1_700_000_000.0
    count = int(rate_per_s * seconds)
    for i in range(count):
        failed = i < failures
        writer.write(Sample(
            start=t0 + i / rate_per_s, worker="w", user=f"u{i % 2}", user_type="modality", association=f"a{i % 2}", operation="C-STORE",
            sop_instance_uid=f"1.2.{i}", study_instance_uid="1.2", instances=1, frames=4, bytes=1_000_000,
            latency_ms=10.0 + (i % 10), status=0xA700 if failed else 0, error="C-STORE status 0xA700" if failed else "",
        ))
    writer.close()
    (folder / "run.json").write_text(json.dumps({"run_id": folder.name, "scenario": {"name": scenario_name}}))
    return folder


def test_rates_match_a_known_synthetic_load(tmp_path):
    run = _synthetic_run(tmp_path / "r", rate_per_s=20.0, seconds=10)
    s = summarize(load_samples(run))
    # 200 instances between the first send (t=0) and the last response (t=9.95+0.019).
    window = 199 / 20.0 + 0.019
    assert s["window_seconds"] == pytest.approx(window, abs=1e-3)
    assert s["instances_per_s"] == pytest.approx(200 / window, rel=1e-3)
    assert s["frames_per_s"] == pytest.approx(4 * 200 / window, rel=1e-3)
    assert s["mb_per_s"] == pytest.approx(200 / window, rel=1e-3)
    assert s["latency_ms"]["p50"] == pytest.approx(14.5) and s["latency_ms"]["max"] == pytest.approx(19.0)
    assert s["failures"] == 0 and s["users"] == 2


def test_failures_are_counted_and_not_throughput(tmp_path):
    run = _synthetic_run(tmp_path / "r", rate_per_s=10.0, seconds=10, failures=30)
    s = summarize(load_samples(run))
    assert s["instances"] == 70 and s["failures"] == 30
    assert s["failures_by_error"] == {"C-STORE status 0xA700": 30}


def test_timeline_bins_per_second(tmp_path):
    run = _synthetic_run(tmp_path / "r", rate_per_s=5.0, seconds=4)
    bins = timeline(load_samples(run))
    assert list(bins["instances"]) == [5, 5, 5, 5]
    assert list(bins["mb"]) == [5.0, 5.0, 5.0, 5.0]


def test_report_is_self_contained_and_escapes_what_users_wrote(tmp_path):
    run = _synthetic_run(tmp_path / "r", scenario_name="<script>alert(1)</script>")
    json_path = run / "run.json"
    record = json.loads(json_path.read_text())
    record["run_id"] = "<b>x</b>"
    json_path.write_text(json.dumps(record))
    html = build_report(run).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    assert (run / "summary.md").is_file() and json.loads((run / "summary.json").read_text())["instances"] == 200


def test_zero_samples_and_missing_folder_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    SampleWriter(empty / "samples.csv").close()
    with pytest.raises(UserError, match="zero samples"):
        load_samples(empty)
    with pytest.raises(UserError, match="run folder not found"):
        load_samples(tmp_path / "nope")
    result = subprocess.run([sys.executable, "-m", "bench.cli", "report", str(empty)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "zero samples" in result.stderr
