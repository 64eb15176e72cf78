"""Growth per hour of the archive's memory, open files and threads (a soak's leak check)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from synthetic import T0, write_run

from bench.analysis.growth import MIN_SPAN_SECONDS, growth, growth_text
from bench.report.page import build_report


def soak_series(
    seconds: int,
    rss_per_hour: float = 0.0,
    fds_per_hour: float = 0.0,
    noise: float = 0.0,
    seed: int = 1,
    start: float = T0,
) -> pd.DataFrame:
    """Per-second rows of a soak: RSS from 200 MB, 40 open files and 12 threads, each rising at a known rate."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, seconds + 1, dtype=float)
    hours = t / 3600.0
    return pd.DataFrame(
        {
            "time": start + t,
            "server_rss_bytes": 200e6 + rss_per_hour * hours + rng.normal(0, noise, seconds),
            "server_open_fds": np.round(40 + fds_per_hour * hours + rng.normal(0, 1, seconds)),
            "server_threads": np.full(seconds, 12.0),
            "server_processes": np.full(seconds, 3.0),
        }
    )


def test_a_leak_grows_and_a_flat_noisy_series_shows_no_trend():
    frame = soak_series(1800, rss_per_hour=60e6, noise=3e6)
    figures = growth(frame, T0, T0 + 1800)
    rss = figures["series"]["server_rss_bytes"]
    assert rss["verdict"] == "grows"
    assert rss["per_hour_low"] <= 60.0 <= rss["per_hour_high"]  # MB per hour: the rate the series was made with
    assert figures["series"]["server_threads"]["verdict"] == "no trend evident"
    assert figures["series"]["server_open_fds"]["verdict"] == "no trend evident"


def test_a_single_spike_does_not_make_a_trend():
    frame = soak_series(1800, noise=1e6)
    frame.loc[900:960, "server_rss_bytes"] += 500e6  # one minute of a large study in memory
    assert growth(frame, T0, T0 + 1800)["series"]["server_rss_bytes"]["verdict"] == "no trend evident"


def test_only_the_measured_span_counts_and_a_short_one_gets_no_trend():
    frame = soak_series(1800)
    frame.loc[frame["time"] < T0 + 300, "server_rss_bytes"] = 50e6  # warm-up: caches still filling
    assert growth(frame, T0 + 300, T0 + 1800)["series"]["server_rss_bytes"]["verdict"] == "no trend evident"
    short = growth(frame, T0, T0 + MIN_SPAN_SECONDS - 60)
    assert "series" not in short and "too short" in short["note"]
    assert growth(None, T0, T0 + 1800)["note"] == "no server metrics recorded"


def test_the_report_states_growth_per_hour(tmp_path):
    run = write_run(tmp_path / "run", rate=5, seconds=1200)
    soak_series(1201, fds_per_hour=300, start=T0 - 1).to_csv(run / "server_metrics.csv", index=False)
    build_report(run)
    summary = json.loads((run / "summary.json").read_text())
    fds = summary["growth"]["series"]["server_open_fds"]
    assert fds["verdict"] == "grows" and fds["per_hour_low"] <= 300 <= fds["per_hour_high"]
    markdown = (run / "summary.md").read_text()
    assert "## Resource growth" in markdown
    assert growth_text(summary["growth"]) in markdown
    assert "<h2>Resource growth</h2>" in (run / "report.html").read_text()
