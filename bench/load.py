"""The load stage: locust users that speak DICOM, run headless from Python.

Importing this module imports locust, which monkey-patches the process for gevent: import
it before anything that starts threads. pynetdicom then runs as greenlets, which is safe;
real threads inside locust are not (the reactor can steal a C-STORE response).

Each user holds one association, opened in on_start and reused; a failed request aborts
it and the next task re-associates. Every request is fired as a locust request event and
written as a sample row.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import gevent
from locust import User, constant, events, task
from locust.env import Environment
from locust.stats import CSV_STATS_INTERVAL_SEC, PERCENTILES_TO_REPORT, StatsCSVFileWriter
from tqdm import tqdm

from bench.dimse_client import AssociationFailed, DicomClient, Peer
from bench.pool import StudyPool
from bench.samples import Sample, SampleWriter
from bench.scenario import Scenario

WORKER_ID = f"{socket.gethostname()}-{os.getpid()}"
REQUEST_TYPE = "DIMSE"
RETRY_PAUSE_S = 1.0  # after a failed association, so a dead target is not hammered


@dataclass
class LoadContext:
    """What every user of one run shares."""

    peer: Peer
    scenario: Scenario
    pool: StudyPool
    samples: SampleWriter


class StoreUser(User):
    """A modality sending whole studies, one C-STORE per task, flat out."""

    abstract = True
    user_type = "modality"
    wait_time = constant(0)
    context: LoadContext  # set on the concrete subclass made by run_load
    _ids = itertools.count(1)

    def on_start(self) -> None:
        self.user_id = f"store-{next(self._ids)}"
        client = self.context.scenario.client
        self.client = DicomClient(self.context.peer, client.calling_ae, client.max_pdu, client.timeout)
        self.client.request_contexts(self.context.pool.sop_classes, self.context.pool.transfer_syntaxes)
        self.queue = []
        self._ensure_association()

    def on_stop(self) -> None:
        self.client.release()

    def _association_id(self) -> str:
        return f"{WORKER_ID}/{self.user_id}/{self.client.associations_opened}"

    def _ensure_association(self) -> bool:
        if self.client.connected:
            return True
        started, t0 = time.time(), time.perf_counter()
        try:
            self.client.connect()
            return True
        except AssociationFailed as exc:
            self._record("ASSOCIATE", started, t0, None, status=-1, error=str(exc))
            gevent.sleep(RETRY_PAUSE_S)
            return False

    @task
    def store_next_instance(self) -> None:
        if not self._ensure_association():
            return
        if not self.queue:
            self.queue = self.context.pool.next_study()
        instance = self.queue.pop(0)
        started, t0 = time.time(), time.perf_counter()
        try:
            status = self.client.store(instance.dataset)
            error = "" if status == 0 else f"C-STORE status 0x{status:04X}"
        except AssociationFailed as exc:
            status, error = -1, str(exc)
        self._record("C-STORE", started, t0, instance, status, error)

    def _record(self, operation: str, started: float, t0: float, instance, status: int, error: str) -> None:
        latency_ms = (time.perf_counter() - t0) * 1000.0
        ds = instance.dataset if instance else None
        size = instance.size if instance else 0
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=operation, response_time=latency_ms, response_length=size,
            exception=AssociationFailed(error) if error else None, context={"user": self.user_id},
        )
        self.context.samples.write(Sample(
            start=started, worker=WORKER_ID, user=self.user_id, user_type=self.user_type,
            association=self._association_id(),
            operation=operation,
            sop_instance_uid=str(ds.SOPInstanceUID) if ds else "",
            study_instance_uid=str(ds.StudyInstanceUID) if ds else "",
            instances=1 if ds else 0, frames=instance.frames if instance else 0, bytes=size,
            latency_ms=latency_ms, status=status, error=error,
        ))


@dataclass
class LoadOutcome:
    started: float
    ended: float
    samples: int
    interrupted: bool


def _progress(env: Environment, duration: float, samples: SampleWriter, enabled: bool) -> None:
    with tqdm(total=int(duration), unit="s", desc="load", disable=not enabled, leave=False) as bar:
        for _ in range(int(duration)):
            gevent.sleep(1.0)
            bar.update(1)
            bar.set_postfix(requests=samples.rows, users=env.runner.user_count if env.runner else 0)


def run_load(scenario: Scenario, peer: Peer, pool: StudyPool, run_dir: Path, progress: bool = True) -> LoadOutcome:
    """Run the scenario's users against `peer` for its duration; write samples and locust CSVs."""
    samples = SampleWriter(run_dir / "samples.csv")
    user_class = type("DicomStoreUser", (StoreUser,), {"context": LoadContext(peer, scenario, pool, samples)})
    env = Environment(user_classes=[user_class], events=events, stop_timeout=scenario.load.stop_timeout)
    runner = env.create_local_runner()
    csv_writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(run_dir / "locust"), full_history=True)
    csv_greenlet = gevent.spawn(csv_writer.stats_writer)
    progress_greenlet = gevent.spawn(_progress, env, scenario.load.duration, samples, progress)
    started = time.time()
    interrupted = False
    try:
        runner.start(scenario.load.users, spawn_rate=scenario.load.spawn_rate or scenario.load.users)
        gevent.sleep(scenario.load.duration)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        runner.quit()  # users finish the request in flight (bounded by stop_timeout)
        ended = time.time()
        progress_greenlet.kill()
        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)  # one more pass so locust's CSVs hold the final counts
        csv_greenlet.kill()
        csv_writer.close_files()
        samples.close()
    return LoadOutcome(started, ended, samples.rows, interrupted)
