"""`pacsbench run --web` watched in headless Chromium: locust's UI on a run with a worker, the live page
updating, the stop button ending the run as Ctrl-C does; a non-local address without a login refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench.common.processes import free_local_port

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """
name = "live"
[target]
kind = "native"
[studies]
profile = "tiny"
pool = 2
seed = 1
[load]
duration = 120          # ended from the UI long before
[users.modality]
count = 2
instances_per_s = 20
[users.query]
count = 1
queries_per_s = 5
"""
# locust's statistics table: the cells of the row of each DICOM operation
LOCUST_ROWS = """[...document.querySelectorAll('tr')].map(r => [...r.cells].map(c => c.innerText.trim()))
  .filter(cells => cells.some(c => /^C-[A-Z]+$/.test(c)))"""
LIVE_STATE = """({updates: +document.getElementById('updates').textContent,
  figures: [...document.querySelectorAll('#figures tbody tr')].map(r => r.innerText),
  resources: [...document.querySelectorAll('#resources .chart .name')].map(n => n.textContent),
  verdict: document.getElementById('verdict').textContent})"""
CLICK_STOP = """(() => { const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'STOP'
  || b.innerText.trim() === 'Stop'); if (b) b.click(); return !!b; })()"""


def pacsbench(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _wait(condition, timeout: float, what: str, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout} s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _requested(browser) -> list[str]:
    return [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]


def _open(browser, url: str, requested: list[str]) -> None:
    """Load `url`; the URLs the page before it requested are added to `requested`."""
    requested += _requested(browser)
    browser.events.clear()
    browser.call("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired")


def _counted_operations(browser) -> dict[str, int]:
    """{operation: requests} from locust's statistics table (the cell after the operation's name)."""
    counts = {}
    for cells in browser.evaluate(LOCUST_ROWS) or []:
        name = next(c for c in cells if c.startswith("C-"))
        after = cells[cells.index(name) + 1].replace(",", "")
        if after.isdigit():
            counts[name] = int(after)
    return counts


@pytest.mark.slow
def test_a_run_watched_in_the_browser_and_stopped_from_it(browser, tmp_path):
    scenario, results, port = tmp_path / "live.toml", tmp_path / "results", free_local_port()
    scenario.write_text(SCENARIO)
    url, requested = f"http://127.0.0.1:{port}/", []
    for domain in ("Page", "Runtime", "Network"):
        browser.call(f"{domain}.enable")
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", scenario, "--results", results, "--no-progress", "--workers", "1"]
        + ["--web", "--web-port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _answers(url), 60, "the web UI answering")
        _open(browser, url, requested)
        counts = _wait(
            lambda: (c := _counted_operations(browser)) and all(c.get(op, 0) > 0 for op in ("C-STORE", "C-FIND")) and c,
            45,
            "C-STORE and C-FIND counted in locust's table",
        )
        assert counts["C-STORE"] > 0 and counts["C-FIND"] > 0, counts

        _open(browser, url + "pacsbench/live", requested)
        first = _wait(
            lambda: (s := browser.evaluate(LIVE_STATE))["resources"] and s["figures"] and s, 20, "resource charts"
        )
        states = [first]
        for _ in range(2):
            states.append(
                _wait(lambda: (s := browser.evaluate(LIVE_STATE))["updates"] > states[-1]["updates"] and s, 5, "update")
            )
        assert len({tuple(s["figures"]) for s in states}) >= 2, states  # the figures moved between updates
        assert any(f.startswith("modality") for f in states[-1]["figures"])
        assert any(f.startswith("query") for f in states[-1]["figures"])
        assert "server_cpu_budget_percent" in states[-1]["resources"]
        assert states[-1]["verdict"] and "no resource figures" not in states[-1]["verdict"]

        _open(browser, url, requested)
        _wait(lambda: browser.evaluate(CLICK_STOP), 20, "locust's stop button")
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    requested += _requested(browser)
    assert requested and all(u.startswith((url, "data:")) for u in requested), requested  # nothing from outside

    assert run.returncode == 1, err  # as for Ctrl-C: the run ended early
    assert "stop button ended the load" in err
    run_dir = Path(out.strip().splitlines()[-1])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["load_seconds"] < 60
    assert record["samples"] > 0 and (run_dir / "server_metrics.csv").stat().st_size > 0
    report = pacsbench("report", run_dir)
    assert report.returncode == 0, report.stderr
    assert (run_dir / "report.html").stat().st_size > 0 and (run_dir / "summary.md").is_file()


def test_a_non_local_web_address_needs_a_login(tmp_path):
    results = tmp_path / "results"
    refused = pacsbench("run", ROOT / "scenarios/smoke.toml", "--results", results, "--web", "--web-host", "0.0.0.0")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--web-auth" in refused.stderr, refused.stderr
    assert not results.exists()  # refused before anything was made


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect comes back as an HTTPError with its Location


def _request(opener, url: str, form: dict | None = None) -> tuple[int, str, str]:
    """(status, Location, body) of one request, redirects not followed."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(url, data=data, timeout=5) as answer:
            return answer.status, "", answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.headers.get("Location", ""), ""
    except OSError:
        return 0, "", ""  # not listening (yet)


def _to_login(answer: tuple[int, str, str]) -> bool:
    return answer[0] == 302 and answer[1].startswith("/login")


@pytest.mark.slow
def test_a_login_guards_the_ui_its_stop_button_and_stays_out_of_the_record(tmp_path):
    scenario, results, port = tmp_path / "live.toml", tmp_path / "results", free_local_port()
    scenario.write_text(SCENARIO.replace("duration = 120", "duration = 6"))
    url = f"http://127.0.0.1:{port}/"
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", scenario, "--results", results, "--no-progress"]
        + ["--web", "--web-port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PACSBENCH_WEB_AUTH": "alice:s3cret-word"},
    )
    try:
        stranger = urllib.request.build_opener(_NoRedirect)
        _wait(lambda: _request(stranger, url)[0] == 302, 60, "the web UI answering")
        assert _to_login(_request(stranger, url + "pacsbench/live.json"))
        assert _to_login(_request(stranger, url + "stop", {}))  # locust refused it: the run goes on
        assert _to_login(_request(stranger, url + "pacsbench-login", {"username": "alice", "password": "guess"}))

        alice = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPCookieProcessor())
        assert _request(alice, url + "pacsbench-login", {"username": "alice", "password": "s3cret-word"})[:2] == (
            302,
            "/",
        )
        status, _, body = _request(alice, url + "pacsbench/live.json")
        assert status == 200 and json.loads(body)["scenario"] == "live"
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err  # the stranger's stop did not end it
    assert "login as alice" in err and "s3cret" not in out + err
    run_dir = Path(out.strip().splitlines()[-1])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert not any("s3cret" in f.read_text(errors="replace") for f in run_dir.iterdir() if f.is_file())


def test_the_live_figures_before_any_row_and_with_whatever_columns_a_target_adds(tmp_path):
    from bench.results.samples import Sample, sample_row
    from bench.runs.live_figures import LiveFigures

    page, now = LiveFigures(tmp_path, "live", "repetition 1/2, target a"), time.time()
    empty = page.snapshot("running", 1)
    assert empty["columns"] == {} and empty["user_types"] == {} and empty["resource_note"]
    assert empty["bound_by"]["limit"] == "not-measured"

    page.load_started, page.cpus = now - 5, 2.0
    (tmp_path / "server_metrics.csv").write_text("time,server_cpu_budget_percent,hypervisor_cpu_ready_percent\n")
    page._verdict_cache = None
    assert page.snapshot("running", 1)["columns"] == {}  # the header alone: still nothing to draw

    rows = "".join(f"{now - 4 + s:.3f},{90 + s},{s or ''}\n" for s in range(4))  # one ready figure missing
    (tmp_path / "server_metrics.csv").write_text("time,server_cpu_budget_percent,hypervisor_cpu_ready_percent\n" + rows)
    for second in range(4):
        store = Sample(now - 4 + second, "w", "u1", "modality", "a1", "C-STORE", "", "", 1, 10, 2_000_000, 5.0, 0, "")
        page.rates.add(sample_row(store))
    page._verdict_cache = None
    live = page.snapshot("running", 1)
    assert set(live["columns"]) == {"server_cpu_budget_percent", "hypervisor_cpu_ready_percent"}
    assert live["columns"]["hypervisor_cpu_ready_percent"]["now_text"] == "3.0%"
    assert live["columns"]["hypervisor_cpu_ready_percent"]["series"][0][1] is None  # an empty cell stays empty
    assert live["bound_by"]["limit"] == "server-cpu"
    assert 0 < live["user_types"]["modality"]["instances_per_s"] <= 1.0
    # 2 MB per instance; both figures are rounded to 2 decimals on their own (0.67/s is 1.33 MB/s, not 1.34)
    rates = live["user_types"]["modality"]
    assert rates["mb_per_s"] == pytest.approx(2 * rates["instances_per_s"], abs=0.015)
    assert live["caption"] == "repetition 1/2, target a" and live["state"] == "running"
