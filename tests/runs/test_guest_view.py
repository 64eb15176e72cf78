"""The archive's own view of its machine: a real `python -m server_under_test` serving /metrics, scraped
by the real sampler process into server_metrics.csv's guest columns; an archive without those figures
leaves them empty and run.json's resources say so."""

from __future__ import annotations

import http.server
import threading
import time

import pandas as pd
import pytest
from helpers.archive import start_archive

from bench.results.server_metrics import GUEST_COLUMNS
from bench.runs.resources import ResourceSampling, scrape_cpu
from server_under_test.metrics import CPU_MODES


@pytest.fixture
def archive_with_metrics(tmp_path):
    running = start_archive(tmp_path / "archive", "--metrics-port", "0")
    assert running.metrics_url, "the archive did not print its metrics URL"
    yield running
    running.stop()


def _burn(seconds: float) -> None:
    """Keep one CPU busy, so the machine's busy share cannot read zero."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _sample(run_dir, metrics_url: str | None, seconds: float, busy: bool) -> tuple[pd.DataFrame, dict]:
    sampling = ResourceSampling(run_dir, None, None, [], None, metrics_url=metrics_url)
    with sampling:
        if busy:
            _burn(seconds)
        else:
            time.sleep(seconds)
    return pd.read_csv(run_dir / "server_metrics.csv"), sampling.describe().guest_view


def test_the_archive_metrics_give_its_machine_cpu_time_by_mode(archive_with_metrics):
    figures = scrape_cpu(archive_with_metrics.metrics_url, timeout=5.0)
    assert set(CPU_MODES) <= set(figures) and figures["cpus"] >= 1
    assert figures["idle"] > 0 and figures["user"] > 0
    later = scrape_cpu(archive_with_metrics.metrics_url, timeout=5.0)
    assert later["user"] + later["system"] >= figures["user"] + figures["system"]  # counters only grow


def test_the_sampler_writes_the_guest_columns_from_the_archive_metrics(archive_with_metrics, tmp_path):
    rows, view = _sample(tmp_path, archive_with_metrics.metrics_url, 3.5, busy=True)
    sampled = rows.dropna(subset=["guest_cpu_percent"])
    assert len(sampled) >= 2, rows
    assert (sampled["guest_cpu_percent"] > 0).all() and (sampled["guest_cpu_percent"] <= 100).all()
    assert (sampled["guest_steal_percent"] >= 0).all() and (sampled["guest_cpus"] >= 1).all()
    assert view.sampled is True and view.rows_with_values == len(sampled)
    assert view.url.endswith("/metrics?only=host")


class _OtherArchivePage(http.server.BaseHTTPRequestHandler):
    """A metrics page of some other archive: Prometheus text without pacsbench's CPU figures."""

    def do_GET(self):  # noqa: N802
        body = b"# TYPE other_requests_total counter\nother_requests_total 5\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_metrics_page_without_the_figures_leaves_the_columns_empty_and_says_so(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtherArchivePage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rows, view = _sample(tmp_path, f"http://127.0.0.1:{server.server_address[1]}", 2.5, busy=False)
    finally:
        server.shutdown()
    assert len(rows) >= 1 and rows[list(GUEST_COLUMNS)].isna().all().all()
    assert view.sampled is False and view.rows == len(rows) and "no pacsbench_host_cpu_seconds" in view.why


def test_without_a_metrics_url_nothing_is_scraped(tmp_path):
    _, view = _sample(tmp_path, None, 1.5, busy=False)
    assert view.sampled is False and "no metrics URL" in view.why
