"""The `run` stage: scenario -> study pool -> target -> locust load -> run folder.

bench.load is imported first on purpose: it brings locust, which monkey-patches the
process for gevent before any socket or thread exists.
"""

from __future__ import annotations

from bench import load  # noqa: I001  (must come first: gevent monkey-patching)

import sys
import time
import traceback
from pathlib import Path

from bench.errors import UserError
from bench.pool import StudyPool
from bench.profile import load_profile
from bench.results import host_facts, new_run_dir, utc_iso, versions, write_run_json
from bench.scenario import TargetSpec, load_scenario
from bench.targets import hypervisor_warning, make_target


def run_scenario(scenario_path: Path, results_root: Path, progress: bool = True,
                 target_spec: TargetSpec | None = None) -> tuple[Path, dict]:
    """Run one scenario (against `target_spec` instead of its own when given); return the run folder and run.json."""
    scenario = load_scenario(scenario_path)
    if target_spec is not None:
        scenario = scenario.model_copy(update={"target": target_spec})
    profile = load_profile(scenario.studies.profile)
    pool = StudyPool.prepare(profile, scenario.studies.pool, scenario.studies.seed, progress=progress)
    run_dir = new_run_dir(results_root, scenario.name)
    record = {
        "run_id": run_dir.name,
        "status": "started",
        "scenario_file": str(scenario_path),
        "scenario": scenario.model_dump(),
        "studies": pool.describe(),
        "versions": versions(),
        "host": host_facts(),
        "command": sys.argv,
    }
    write_run_json(run_dir, record)
    target = make_target(scenario.target, scenario.client)
    try:
        target.start(run_dir)
        record["target"] = target.describe()
        if warning := hypervisor_warning(record["target"]):
            record["warnings"] = [warning]
            print(f"pacsbench: warning: {warning}", file=sys.stderr)
        record["status"] = "running"
        write_run_json(run_dir, record)
        outcome = load.run_load(scenario, target.peer, pool, run_dir, progress=progress)
        record.update(
            status="interrupted" if outcome.interrupted else "completed",
            started=utc_iso(outcome.started),
            ended=utc_iso(outcome.ended),
            load_seconds=round(outcome.ended - outcome.started, 3),
            samples=outcome.samples,
        )
    except UserError as exc:
        record.update(status="failed", error=str(exc))
        raise
    except BaseException as exc:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    finally:
        stop_started = time.monotonic()
        try:
            target.collect_metrics(run_dir)
        finally:
            target.stop()
        record["target"] = target.describe()
        record["target_stop_seconds"] = round(time.monotonic() - stop_started, 3)
        write_run_json(run_dir, record)
    return run_dir, record
