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
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.common.errors import UserError
from bench.common.processes import interrupt_on_sigterm, sigterm_deferred
from bench.load.calibrate import ceiling_for_run
from bench.load.pools import prepare_pools
from bench.load.prefill import prefill
from bench.load.shapes import step_figures
from bench.load.web import WebSettings
from bench.results.run_file import command_line, host_facts, versions, write_run_json
from bench.results.run_folder import new_run_dir, utc_iso
from bench.results.run_record import LoadProcesses, RunRecord, SuboperationTotals
from bench.results.samples import SAMPLES_FILE, SUBOPERATIONS_FILE
from bench.runs.disk import DiskWatch, capacity_figures, plan_disk, watched_paths
from bench.runs.faults import FaultInjector, fault_figures, fault_line
from bench.runs.live import LivePage
from bench.runs.resources import ResourceSampling, interface_with_address
from bench.runs.verify import summary_line, verify_against
from bench.scenario.file import archive_in_namespace, dicomweb_gap, load_scenario, with_dicomweb
from bench.scenario.targets import TargetSpec
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

    @property
    def count(self) -> int:
        """Load processes: the master alone, or its workers."""
        return max(1, self.workers + self.remote_workers)

    def describe(self) -> LoadProcesses:
        return LoadProcesses(
            mode="distributed" if self.workers + self.remote_workers else "local",
            local_workers=self.workers,
            remote_workers=self.remote_workers,
        )


def suboperation_totals(run_dir: Path) -> dict[str, SuboperationTotals]:
    """Per retrieve operation: requests and the archive's sub-operation counts against what arrived."""
    path = run_dir / SUBOPERATIONS_FILE
    if not path.is_file():
        return {}
    rows = pd.read_csv(path)
    totals = rows.groupby("operation")[["completed", "failed", "warning", "arrived", "arrived_bytes"]].sum()
    return {
        str(op): SuboperationTotals(requests=int((rows["operation"] == op).sum()), **{k: int(v) for k, v in t.items()})
        for op, t in totals.iterrows()
    }


def resource_sampling(run_dir: Path, target, engine: load.LoadEngine) -> ResourceSampling:
    """The sampler of server_metrics.csv for this run: the target's processes, the load processes, the path between."""
    load_pids = [os.getpid(), *(p.pid for p in engine.processes)]
    interface = interface_with_address(load.local_address_towards(target.peer.host))
    budget = target.budget_record()
    return ResourceSampling(
        run_dir,
        target.server_pid(),
        budget["cpus"],
        load_pids,
        interface,
        budget.get("cpu_ids"),
        target.guest_metrics_url(),
        target.hypervisor_source(),
    )


def run_status(outcome: load.LoadOutcome, watch: DiskWatch, record: RunRecord) -> str:
    """run.json's status; a run stopped early says why in one warning line (and `run` exits 1)."""
    planned = record.disk.model_dump(exclude_unset=True) if record.disk else {}
    record.disk = {**planned, **watch.describe()}
    if outcome.interrupted:
        return "interrupted"
    if outcome.stop_reason:
        print(
            f"pacsbench: warning: {outcome.stop_reason} ({watch.detail}); the samples up to then are kept",
            file=sys.stderr,
        )
        return outcome.stop_reason
    return "completed"


def disk_watch(target_spec: TargetSpec, run_dir: Path, reserve: int, records) -> DiskWatch:
    """The load's stop check; a native archive that rejects or recycles at its capacity keeps itself in bounds."""
    self_bounded = target_spec.kind == "native" and target_spec.at_capacity != "stop"
    return DiskWatch(
        watched_paths(target_spec, run_dir),
        reserve,
        records,
        stop_at_capacity=target_spec.kind == "native" and target_spec.at_capacity == "stop",
        margin_seconds=0.0 if self_bounded else 2.0,
    )


def record_capacity(record: RunRecord, run_dir: Path, target_spec: TargetSpec) -> None:
    """A bounded native archive's use and recycled totals, from its /status at the end."""
    figures = capacity_figures(run_dir, target_spec)
    if figures:
        record.capacity = figures


def run_scenario(
    scenario_path: Path,
    results_root: Path,
    progress: bool = True,
    processes: Processes = Processes(),
    verify: bool = False,
    target_spec: TargetSpec | None = None,
    verify_protocol: str = "dimse",
    web: WebSettings | None = None,
    caption: str = "",
) -> tuple[Path, RunRecord]:
    """Run one scenario (against `target_spec` instead of its own when given); return the run folder and run.json.

    From here on a SIGTERM ends the run as Ctrl-C does: the load stops, the load processes and the target
    stop, run.json says "interrupted", and `run` exits non-zero. With `web`, locust's web UI and the live
    page (`caption` says which run of a matrix this is) show the run, and its stop button ends it the same way.
    `verify` retrieves every acknowledged instance after the load by C-GET, or by WADO-RS with `verify_protocol`
    "dicomweb" (then the reference archive serves DICOMweb, natively or in its guest)."""
    interrupt_on_sigterm()
    scenario = load_scenario(scenario_path)
    if target_spec is not None:
        scenario = scenario.model_copy(update={"target": target_spec})
    if gap := dicomweb_gap(scenario):
        raise UserError(gap)
    wado = verify and verify_protocol == "dicomweb"
    if wado and (missing := scenario.target.dicomweb_missing()):
        raise UserError(f"--verify-protocol dicomweb: {missing}")
    scenario = with_dicomweb(scenario, verified_by_wado=wado)
    pools = prepare_pools(scenario, progress)
    pool = pools[scenario.studies.profile]
    syntax = scenario.studies.transfer_syntax or pool.profile.transfer_syntax
    calibration = ceiling_for_run(pool.profile.name, syntax, processes.count)
    described = {name: p.describe() for name, p in pools.items()}
    target_spec, disk = plan_disk(scenario, scenario.target, described, calibration, processes.count, results_root)
    if disk.warning:
        print(f"pacsbench: warning: {disk.warning}", file=sys.stderr)
    with sigterm_deferred():  # a SIGTERM here waits: no run folder without its run.json, no target half made
        run_dir = new_run_dir(results_root, scenario.name)
        live = LivePage(run_dir, scenario.name, caption) if web else None
        engine = load.LoadEngine(
            scenario,
            pools,
            run_dir,
            processes.workers,
            processes.remote_workers,
            processes.master_bind,
            processes.master_port,
            progress,
            processes.join_timeout,
            web,
            [live.on_init] if live else [],
        )
        record = RunRecord(
            run_id=run_dir.name,
            status="started",
            scenario_file=str(scenario_path),
            scenario=scenario.model_dump(mode="json"),
            studies=described[scenario.studies.profile],
            modality_studies={name: d for name, d in described.items() if name != scenario.studies.profile},
            load_processes=processes.describe(),
            calibration=calibration,
            disk=disk,
            versions=versions(),
            host=host_facts(),
            command=command_line(sys.argv),
        )
        write_run_json(run_dir, record)
        target = make_target(target_spec, scenario.client, progress, in_namespace=archive_in_namespace(scenario))
        injector = FaultInjector(target, scenario.faults)
    try:
        destinations = engine.start()
        record.harness_scp = {ae: f"{host}:{port}" for ae, (host, port) in destinations.items()}
        target.destinations = destinations
        target.start(run_dir)
        described = target.describe()
        record.target = described
        if live:
            live.target = f"{target_spec.label or target_spec.kind} ({target_spec.kind})"
            live.cpus = target.budget_record()["cpus"]
        warnings = [w for w in [hypervisor_warning(described), *target.warnings()] if w]
        if warnings:
            record.warnings = warnings
            for warning in warnings:
                print(f"pacsbench: warning: {warning}", file=sys.stderr)
        record.status = "running"
        write_run_json(run_dir, record)
        if scenario.studies.prefill:
            record.prefill = prefill(pool, target.peer, scenario.client, scenario.studies.prefill, engine.records)
            write_run_json(run_dir, record)
        watch = disk_watch(target_spec, run_dir, scenario.run.disk_reserve, engine.records)
        with resource_sampling(run_dir, target, engine) as sampling:
            injector.start()
            if live:
                live.load_started, live.faults = injector.load_started, injector.events
            try:
                outcome = engine.run(target.peer, stop_check=watch)
            finally:
                injector.finish()
        record.resources = sampling.describe()
        record.status = run_status(outcome, watch, record)
        record.started, record.ended = utc_iso(outcome.started), utc_iso(outcome.ended)
        record.load_seconds = round(outcome.ended - outcome.started, 3)
        record.samples, record.workers = outcome.samples, outcome.workers
        record.suboperations = suboperation_totals(run_dir)
        if outcome.steps and outcome.samples:
            record.steps = step_figures(pd.read_csv(run_dir / SAMPLES_FILE), outcome.steps, outcome.ended)
        if scenario.faults and not outcome.interrupted:
            record.faults = fault_figures(
                injector.events, run_dir, outcome.started, outcome.ended, target.peer, scenario.client
            )
            print("\n".join(fault_line(f) for f in record.faults), file=sys.stderr)
        write_run_json(run_dir, record)
        if verify and not outcome.interrupted:
            # verify_against writes run.json["verify"] itself; this record is written again below
            record.verify = verify_against(target.peer, run_dir, scenario.client, verify_protocol)
            print(summary_line(record.verify), file=sys.stderr)
    except UserError as exc:
        record.status, record.error = "failed", str(exc)
        raise
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside the load (the load's own ends in its outcome)
        record.status = "interrupted"
        raise
    except BaseException as exc:
        record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
        record.traceback = traceback.format_exc()
        raise
    finally:
        with sigterm_deferred():  # a SIGTERM now waits: it must not leave the archive, its namespace or a half run.json
            finish(engine, target, record, run_dir, target_spec)
    return run_dir, record


def finish(engine: load.LoadEngine, target, record: RunRecord, run_dir: Path, target_spec: TargetSpec) -> None:
    """The run's clean-up: the load processes and the target stop; run.json gets the target's last facts."""
    engine.close()
    stop_started = time.monotonic()
    try:
        target.collect_metrics(run_dir)
        record_capacity(record, run_dir, target_spec)
    finally:
        target.stop()
    record.target = target.describe()
    record.target_stop_seconds = round(time.monotonic() - stop_started, 3)
    write_run_json(run_dir, record)
