"""Figures that do not flatter: every request in the percentiles, warnings shown, impossible
settings refused, the drain left out of the measured span, incomplete runs not compared by default."""

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest
from synthetic import T0, write_run

from bench.analysis.aggregate import Settings, Warmup, load_samples, measure, metric, summarize
from bench.common.errors import UserError
from bench.report.page import build_report

NO_WARMUP = Settings(Warmup.parse("0"))
TIMEOUT_MS = 30_000.0


def pacsbench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True)


def rewrite_status(run, every: int, status: int, latency_ms: float | None = None):
    """Give every `every`-th C-STORE row `status` (and a latency), as a real archive or a timeout would."""
    samples = pd.read_csv(run / "samples.csv", dtype=str, keep_default_na=False)
    chosen = samples.index[::every]
    samples.loc[chosen, "status"] = str(status)
    if latency_ms is not None:
        samples.loc[chosen, "latency_ms"] = str(latency_ms)
        samples.loc[chosen, "error"] = "no response within the timeout"
    samples.to_csv(run / "samples.csv", index=False)
    return len(chosen)


def test_timeouts_count_in_the_percentiles_with_the_failed_count_beside(tmp_path):
    run = write_run(tmp_path / "r", rate=50, seconds=20, latency_ms=20)
    timed_out = rewrite_status(run, 20, -1, TIMEOUT_MS)  # 5% of requests never answered
    s = summarize(load_samples(run), NO_WARMUP)
    assert s["latency_ms"]["p99"] == TIMEOUT_MS and s["latency_ms"]["p90"] < 100
    assert s["latency_ms"]["failed"] == timed_out and s["operations"]["C-STORE"]["latency_ms"]["failed"] == timed_out
    m = measure(load_samples(run), NO_WARMUP)
    assert metric("c_store_p99_ms").value(m) == TIMEOUT_MS
    html = build_report(run, NO_WARMUP).read_text()
    assert f"({timed_out} failed)" in html and f"({timed_out} of" in (run / "summary.md").read_text()


def test_warning_statuses_are_stored_and_shown_as_warnings(tmp_path):
    run = write_run(tmp_path / "r", rate=50, seconds=20)
    all_ok = summarize(load_samples(run), NO_WARMUP)
    warned = rewrite_status(run, 4, 0xB000)  # coercion of data elements: stored
    s = summarize(load_samples(run), NO_WARMUP)
    assert s["instances"] == all_ok["instances"] and s["warnings"] == warned > 0
    assert s["operations"]["C-STORE"]["warnings"] == warned and s["latency_ms"]["failed"] == 0
    assert "warnings (stored)" in build_report(run, NO_WARMUP).read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--warmup", "100s"], "--warmup 100s: the run lasted only"),
        (["--window", "30"], "--window 30: longer than the measured span"),
    ],
)
@pytest.mark.parametrize("verb", ["report", "compare", "gate"])
def test_impossible_warmup_or_window_is_one_line_exit_2(tmp_path, verb, options, message):
    run = write_run(tmp_path / "r", rate=20, seconds=12)
    extra = {"report": [], "compare": ["--out", tmp_path / "cmp"], "gate": ["--baseline", run]}[verb]
    result = pacsbench(verb, run, *extra, *options)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_settings_are_checked_in_the_analysis_too(tmp_path):
    samples = load_samples(write_run(tmp_path / "r", rate=20, seconds=12))
    with pytest.raises(UserError, match="--warmup 12s"):
        measure(samples, Settings(Warmup.parse("12s"), chosen=True))
    measure(samples, Settings(Warmup.parse("5s"), 5.0, chosen=True))  # 6.9 s left: one 5-s window fits


def test_a_run_shorter_than_the_default_window_is_reported_too_short_not_refused(tmp_path):
    run = write_run(tmp_path / "r", rate=200, seconds=1.0)  # a run stopped at once, e.g. by a full disk
    result = pacsbench("report", run)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["instances"] > 0
    assert summary["estimates"]["ingest_instances_per_s"]["evidence_kind"] == "too short"
    assert "too short" in (run / "summary.md").read_text()


def test_the_measured_span_ends_at_the_stop_signal_and_the_drain_is_reported(tmp_path):
    stop_after = 15
    run = write_run(
        tmp_path / "r",
        rate=40,
        seconds=20,
        run_extra={
            "started": dt.datetime.fromtimestamp(T0, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "scenario": {"name": "synthetic", "load": {"users": 4, "duration": stop_after}},
        },
    )
    build_report(run, NO_WARMUP)
    s = json.loads((run / "summary.json").read_text())
    samples = load_samples(run)
    after_stop = int((samples["end"] > T0 + stop_after).sum())
    assert after_stop > 0 and s["drain"]["requests"] == after_stop
    assert s["window_seconds"] <= stop_after and s["requests"] == len(samples) - after_stop
    assert "drain after the stop signal" in (run / "report.html").read_text()
    without = summarize(samples, NO_WARMUP)  # no stop time known: the last response ends the span
    assert without["drain"]["requests"] == 0 and without["window_seconds"] > stop_after


def test_compare_and_gate_refuse_runs_that_did_not_complete(tmp_path):
    good = write_run(tmp_path / "good", rate=50, seconds=15, target="native")
    stopped = write_run(
        tmp_path / "stopped",
        rate=50,
        seconds=15,
        seed=2,
        target="kvm",
        run_extra={"status": "stopped: the disk reserve was reached"},
    )
    for args in (
        ["compare", good, stopped, "--out", tmp_path / "cmp"],
        ["gate", stopped, "--baseline", good],
        ["gate", good, "--baseline", stopped],
    ):
        result = pacsbench(*args)
        assert result.returncode == 2 and "did not complete" in result.stderr and "stopped" in result.stderr
        assert result.stderr.count("\n") == 1
        assert pacsbench(*args, "--include-incomplete").returncode == 0
