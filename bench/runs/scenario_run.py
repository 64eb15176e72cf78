"""The `run` stage: scenario -> study pool -> load processes -> target -> prefill -> load -> run folder.

bench.load.engine is imported first on purpose: it brings locust, which monkey-patches the
process for gevent before any socket or thread exists.

The load processes come up before the target: each one's Storage SCP must be in a native
archive's C-MOVE destinations when it starts.
"""

from __future__ import annotations

# First: importing the engine imports locust, which monkey-patches the process for gevent.
from bench.load import engine as load

# isort: split
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.common.errors import UserError
from bench.load.calibrate import ceiling_for_run
from bench.load.prefill import prefill
from bench.load.scenario import TargetSpec, load_scenario
from bench.load.shapes import step_figures
from bench.results.run_folder import host_facts, new_run_dir, utc_iso, versions, write_run_json
from bench.results.samples import SAMPLES_FILE, SUBOPERATIONS_FILE
from bench.runs.verify import summary_line, verify_against
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from bench.targets import make_target
from bench.targets.probes import hypervisor_warning


@dataclass(frozen=True)
class Processes:
    """How the load is spread: local worker processes, workers joining from elsewhere, the master's address."""

    workers: int = 0
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int = 0
    join_timeout: float = 120.0

    def describe(self) -> dict:
        return {"mode": "distributed" if self.workers + self.remote_workers else "local",
                "local_workers": self.workers, "remote_workers": self.remote_workers}


def _mean_instance_bytes(pool: StudyPool) -> float:
    described = pool.describe()
    return described["bytes"] / max(described["instances"], 1)


def suboperation_totals(run_dir: Path) -> dict:
    """Per retrieve operation: requests and the archive's sub-operation counts against what arrived."""
    path = run_dir / SUBOPERATIONS_FILE
    if not path.is_file():
        return {}
    rows = pd.read_csv(path)
    totals = rows.groupby("operation")[["completed", "failed", "warning", "arrived", "arrived_bytes"]].sum()
    return {op: {"requests": int((rows["operation"] == op).sum()), **{k: int(v) for k, v in t.items()}}
            for op, t in totals.iterrows()}


def run_scenario(scenario_path: Path, results_root: Path, progress: bool = True, processes: Processes = Processes(),
                 verify: bool = False, target_spec: TargetSpec | None = None) -> tuple[Path, dict]:
    """Run one scenario (against `target_spec` instead of its own when given); return the run folder and run.json."""
    scenario = load_scenario(scenario_path)
    if target_spec is not None:
        scenario = scenario.model_copy(update={"target": target_spec})
    profile = load_profile(scenario.studies.profile)
    syntax = scenario.studies.transfer_syntax or profile.transfer_syntax
    pool = StudyPool.prepare(profile, scenario.studies.pool, scenario.studies.seed, progress=progress,
                             transfer_syntax=syntax)
    run_dir = new_run_dir(results_root, scenario.name)
    engine = load.LoadEngine(scenario, pool, run_dir, processes.workers, processes.remote_workers,
                             processes.master_bind, processes.master_port, progress, processes.join_timeout)
    record = {
        "run_id": run_dir.name,
        "status": "started",
        "scenario_file": str(scenario_path),
        "scenario": scenario.model_dump(),
        "studies": pool.describe(),
        "load_processes": processes.describe(),
        "calibration": ceiling_for_run(profile.name, syntax, _mean_instance_bytes(pool), engine.processes_count),
        "versions": versions(),
        "host": host_facts(),
        "command": sys.argv,
    }
    write_run_json(run_dir, record)
    target = make_target(scenario.target, scenario.client, progress)
    try:
        destinations = engine.start()
        record["harness_scp"] = {ae: f"{host}:{port}" for ae, (host, port) in destinations.items()}
        target.destinations = destinations
        target.start(run_dir)
        record["target"] = target.describe()
        if warning := hypervisor_warning(record["target"]):
            record["warnings"] = [warning]
            print(f"pacsbench: warning: {warning}", file=sys.stderr)
        record["status"] = "running"
        write_run_json(run_dir, record)
        if scenario.studies.prefill:
            record["prefill"] = prefill(pool, target.peer, scenario.client, scenario.studies.prefill, engine.records)
            write_run_json(run_dir, record)
        outcome = engine.run(target.peer)
        record.update(
            status="interrupted" if outcome.interrupted else "completed",
            started=utc_iso(outcome.started),
            ended=utc_iso(outcome.ended),
            load_seconds=round(outcome.ended - outcome.started, 3),
            samples=outcome.samples,
            workers=outcome.workers,
        )
        record["suboperations"] = suboperation_totals(run_dir)
        if outcome.steps and outcome.samples:
            record["steps"] = step_figures(pd.read_csv(run_dir / SAMPLES_FILE), outcome.steps, outcome.ended)
        write_run_json(run_dir, record)
        if verify and not outcome.interrupted:
            record["verify"] = verify_against(target.peer, run_dir, scenario.client)
            print(summary_line(record["verify"]), file=sys.stderr)
    except UserError as exc:
        record.update(status="failed", error=str(exc))
        raise
    except BaseException as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    finally:
        engine.close()
        stop_started = time.monotonic()
        try:
            target.collect_metrics(run_dir)
        finally:
            target.stop()
        record["target"] = target.describe()
        record["target_stop_seconds"] = round(time.monotonic() - stop_started, 3)
        write_run_json(run_dir, record)
    return run_dir, record
