"""What `pacsbench run --web` costs a run's throughput: the same scenario with and without it, alternated.

Each pair runs the scenario twice in fresh processes, the order swapped every pair (plain, web;
web, plain; ...). During a web run a viewer polls as locust's page and the live page do
(/stats/requests every 2 s, /pacsbench/live.json every second), so the figure includes serving
them. Printed: instances/s of every run, the web/plain ratio per pair and its median, the plain runs'
own spread (max/min), the noise that ratio is to be read against; and the load processes' CPU seconds
per 1000 instances (server_metrics.csv), web/plain: the cost itself, steadier on a shared machine.

    python -m bench.benchmarks.web_cost [--scenario scenarios/smoke.toml] [--duration 15] [--pairs 3]

Goal (issue 24): the ratio within the noise. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from datetime import datetime
from pathlib import Path

from bench.analysis.aggregate import load_samples, load_server_metrics, summarize
from bench.analysis.bounds import measured_rows
from bench.common.processes import free_local_port
from bench.results.run_file import read_run_json

POLLS = (("stats/requests", 2.0), ("pacsbench/live.json", 1.0))  # what the two pages fetch, and how often


def shortened(scenario: Path, duration: float, folder: Path) -> Path:
    """A copy of the scenario whose [load] lasts `duration` seconds (the line rewritten: comments stay)."""
    lines, table, found = scenario.read_text().splitlines(), "", False
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped
        elif table == "[load]" and re.match(r"duration\s*=", stripped):
            lines[number], found = f"duration = {duration:g}", True
    if not found:
        raise SystemExit(f"{scenario}: no duration in [load] to shorten")
    out = folder / scenario.name
    out.write_text("\n".join(lines) + "\n")
    tomllib.loads(out.read_text())  # still a scenario file
    return out


def poll(url: str, every: float, stop: threading.Event) -> None:
    """One page's fetches until `stop`; refused ones (the UI not up yet, or gone) are skipped."""
    while not stop.wait(every):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()
        except OSError:
            continue


def load_cpu_per_1000(run_dir: Path, instances: int) -> float:
    """CPU seconds the load process(es) used per 1000 acknowledged instances, over the load (server_metrics.csv):
    the cost itself, less moved than throughput by what else runs on a shared machine."""
    frame, _ = load_server_metrics(run_dir)
    record = read_run_json(run_dir)
    if frame is None or not instances or not record.started or not record.ended:
        return float("nan")
    begin, end = (datetime.fromisoformat(t).timestamp() for t in (record.started, record.ended))
    rows = measured_rows(frame, begin, end)
    return float(rows["load_cpu_percent"].sum()) / 100 / instances * 1000


def one_run(scenario: Path, results: Path, web: bool) -> tuple[float, float]:
    """One run in a fresh process; its C-STORE instances/s and the load's CPU seconds per 1000 instances."""
    command = [sys.executable, "-m", "bench.cli", "run", str(scenario), "--results", str(results), "--no-progress"]
    stop, viewers = threading.Event(), []
    if web:
        port = free_local_port()
        command += ["--web", "--web-port", str(port)]
        viewers = [
            threading.Thread(target=poll, args=(f"http://127.0.0.1:{port}/{path}", every, stop), daemon=True)
            for path, every in POLLS
        ]
    for viewer in viewers:
        viewer.start()
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        stop.set()
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    figures = summarize(load_samples(run_dir))
    return float(figures["instances_per_s"]), load_cpu_per_1000(run_dir, int(figures["instances"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", type=Path, default=Path("scenarios/smoke.toml"))
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load per run (default 15)")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs, order swapped each pair (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="web-cost-") as tmp:
        folder = Path(tmp)
        scenario = shortened(args.scenario, args.duration, folder)
        plain, web, ratios, cpu_ratios = [], [], [], []
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            figures = {}
            for with_web in order:
                figures[with_web] = one_run(scenario, folder / "results", with_web)
                rate, cpu = figures[with_web]
                print(
                    f"pair {pair + 1} {'web  ' if with_web else 'plain'}: {rate:.1f} instances/s, "
                    f"load CPU {cpu:.2f} s per 1000 instances"
                )
                time.sleep(1.0)
            plain.append(figures[False][0])
            web.append(figures[True][0])
            ratios.append(figures[True][0] / figures[False][0])
            cpu_ratios.append(figures[True][1] / figures[False][1])
    print(f"web/plain per pair: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"web/plain median ratio: {statistics.median(ratios):.3f}")
    print(f"plain runs' spread (max/min): {max(plain) / min(plain):.3f}; web runs' {max(web) / min(web):.3f}")
    print(f"load CPU per instance, web/plain median ratio: {statistics.median(cpu_ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
