"""Workers on other clocks: the master measures each joining worker's clock and puts its rows on its own.

The end-to-end test runs a worker in a network namespace of its own (another host, as far as
the network goes) whose clock libfaketime sets apart from the master's by a known skew.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT
from helpers.archive import start_archive
from helpers.tools import require_tool

from bench.common.netns import VethNamespace
from bench.common.processes import free_local_port as free_port
from bench.common.processes import stop_process
from bench.load.clock import Exchange, best_exchange
from bench.results.samples import SAMPLES_FILE, SENT_FILE, on_master_clock, unix_time


def exchanges_with(skew: float, delays: list[tuple[float, float]]) -> list[Exchange]:
    """Exchanges with a worker whose clock is `skew` ahead; each request and answer take the delays given."""
    found, now = [], time.time()
    for there, back in delays:
        found.append(Exchange(now, now + there + skew, now + there + back))
        now += there + back
    return found


def test_the_offset_of_the_quickest_exchange_is_kept_and_within_half_its_round_trip():
    skew = random.uniform(-100, 100)
    exchanges = exchanges_with(skew, [(0.040, 0.002), (0.001, 0.003), (0.020, 0.030)])
    best = best_exchange(exchanges)
    assert best is exchanges[1]
    assert abs(best.offset - skew) <= best.round_trip / 2 + 1e-6  # float rounding of Unix times
    assert all(abs(e.offset - skew) > abs(best.offset - skew) for e in exchanges if e is not best)


def test_only_time_columns_move_to_the_master_clock_and_the_batch_is_left_as_it_came():
    start = time.time()
    batch = {
        SAMPLES_FILE: [{"start": unix_time(start), "user": "w1-1", "latency_ms": "12.500"}],
        SENT_FILE: [{"sop_instance_uid": "1.2.3", "bytes": 10}],
    }
    sent = json.loads(json.dumps(batch))
    shifted = on_master_clock(batch, 30.25)
    assert float(shifted[SAMPLES_FILE][0]["start"]) == pytest.approx(start - 30.25, abs=1e-6)
    assert {k: v for k, v in shifted[SAMPLES_FILE][0].items() if k != "start"} == {
        "user": "w1-1",
        "latency_ms": "12.500",
    }
    assert shifted[SENT_FILE] == sent[SENT_FILE]
    assert batch == sent


# -- a worker on another host, with its own clock ------------------------------------------------

SKEW_SECONDS = -47  # the worker's clock behind the master's: far more than the run lasts
MARGIN_SECONDS = 0.01  # beyond the measured round trip: float rounding and faketime's own reading


@pytest.fixture
def namespace(root):
    """A network namespace of its own, joined to this one by a veth pair; removed whatever happens."""
    ip = require_tool("ip", "iproute2")
    ns = VethNamespace(shutil.which(ip))
    try:
        ns.create()
        ns.address_peer()
        yield ns
    finally:
        ns.remove()
        listed = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=30).stdout
        assert ns.name not in listed


@pytest.mark.slow
def test_a_skewed_worker_in_its_own_namespace_is_measured_and_its_samples_corrected(tmp_path, namespace):
    faketime = require_tool("faketime", "faketime")
    archive = start_archive(tmp_path / "archive", "--host", namespace.host_ip)  # reachable from the namespace
    master_port = free_port()
    scenario = tmp_path / "skew.toml"
    scenario.write_text(
        'name = "skew"\n[studies]\nprofile = "tiny"\npool = 2\n'
        f'[target]\nkind = "remote"\nhost = "{namespace.host_ip}"\nport = {archive.port}\n'
        "[load]\nusers = 2\nduration = 4\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    master = worker = None
    try:
        master = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.cli",
                "run",
                str(scenario),
                "--results",
                str(tmp_path / "r"),
                "--no-progress",
                "--remote-workers",
                "1",
                "--master-bind",
                namespace.host_ip,
                "--master-port",
                str(master_port),
                "--workers-timeout",
                "120",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        # The worker: inside the namespace, its clock set apart by libfaketime (-m: it has threads).
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [
                *namespace.exec_prefix,
                faketime,
                "-m",
                "-f",
                f"{SKEW_SECONDS:+d}",
                sys.executable,
                "-m",
                "bench.cli",
                "worker",
                "--master",
                namespace.host_ip,
                "--master-port",
                str(master_port),
                "--join-timeout",
                "60",
            ],
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        out, err = master.communicate(timeout=300)
        assert master.returncode == 0, out + err + (tmp_path / "worker.log").read_text()
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        stop_process(worker, 10.0, group=True)
        stop_process(master, 10.0)
        archive.stop()

    run_dir = Path(out.strip().splitlines()[-1])
    record = json.loads((run_dir / "run.json").read_text())
    (joined,) = record["workers"]
    offset, round_trip = joined["clock_offset_seconds"], joined["clock_round_trip_seconds"]
    print(f"injected skew {SKEW_SECONDS} s, measured offset {offset:.6f} s, round trip {round_trip * 1e3:.3f} ms")
    assert joined["address"] == namespace.peer_ip
    assert 0 < round_trip and abs(offset - SKEW_SECONDS) <= round_trip + MARGIN_SECONDS

    starts = pd.read_csv(run_dir / "samples.csv")["start"]
    assert len(starts) > 0
    began, ended = (dt.datetime.fromisoformat(record[key]).timestamp() for key in ("started", "ended"))
    assert starts.between(began, ended).all()  # on the master's clock: inside the load span
    assert not (starts + offset).between(began, ended).any()  # as the worker's clock read them: none inside
