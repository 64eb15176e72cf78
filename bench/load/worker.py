"""A load worker process: joins a master (`pacsbench run --workers N`, or from another machine).

The protocol on top of locust's worker runner (see bench.load.engine): say hello, receive the
scenario, load the study pool in a native thread (the pool is CPU work; heartbeats must
keep flowing), start a Storage SCP when workstations C-MOVE, report ready, learn the
target, then run the users the master dispatches. Sample rows travel to the master with
locust's periodic worker reports and in one last batch when the users stop.
"""

from __future__ import annotations

import gevent
import locust.runners
from locust import events
from locust.env import Environment

from bench.common.errors import UserError
from bench.dicom.peer import Peer
from bench.load import engine as load
from bench.load.scenario import Scenario
from bench.load.users import WORKER_ID, LoadContext, user_classes
from bench.results.samples import RelayedRecords
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile

EXIT_DELAY_S = 1.0


class WorkerSide:
    def __init__(self, env: Environment, master_host: str):
        self.env = env
        self.master_host = master_host
        self.records = RelayedRecords()
        self.context: LoadContext | None = None

    def on_setup(self, environment, msg) -> None:
        try:
            self._set_up(msg.data)
        except Exception as exc:  # the master turns this into the run's one-line error
            environment.runner.send_message(load.FAILED, {"worker": WORKER_ID, "error": f"{type(exc).__name__}: {exc}"})

    def _set_up(self, data: dict) -> None:
        scenario = Scenario.model_validate(data["scenario"])
        studies = scenario.studies
        pool = gevent.get_hub().threadpool.apply(
            StudyPool.prepare, (load_profile(studies.profile), studies.pool, studies.seed),
            {"progress": False, "transfer_syntax": studies.transfer_syntax})
        self.context = LoadContext(scenario, pool, self.records, user_prefix=f"w{data['index'] + 1}-")
        ready = {"worker": WORKER_ID}
        if data["ae"]:
            host = scenario.client.scp_host or load.local_address_towards(self.master_host)
            scp = load.start_scp(scenario, data["ae"], data["scp_port"], host)
            self.context.scp, self.context.destination_ae = scp, data["ae"]
            ready.update(ae=data["ae"], host=host, port=scp.port)
        self.env.user_classes[:] = user_classes(scenario, self.context)
        self.env.runner.send_message(load.READY, ready)

    def on_target(self, environment, msg) -> None:
        self.context.peer = Peer(msg.data["host"], int(msg.data["port"]), msg.data["ae_title"])

    def on_report(self, client_id: str, data: dict) -> None:
        batch = self.records.drain()
        if batch:
            data[load.REPORT_KEY] = batch

    def on_test_stop(self, environment, **_) -> None:
        # Sent before locust's "client_stopped": the master has every row when it sees us stop.
        environment.runner.send_message(load.ROWS, self.records.drain())
        # Locust sends its last statistics on "quit", which we do not wait for: send them now.
        environment.runner._send_stats()
        # One test per worker process: leave once locust has told the master (its stop handler
        # would otherwise sleep stop_timeout before it reads the master's "quit").
        gevent.spawn_later(EXIT_DELAY_S, environment.runner.quit)

    def close(self) -> None:
        if self.context and self.context.scp:
            self.context.scp.stop()


def run_worker(master_host: str, master_port: int, join_timeout: float = 60.0) -> int:
    locust.runners.CONNECT_RETRY_COUNT = max(1, int(join_timeout / locust.runners.CONNECT_TIMEOUT))
    env = Environment(user_classes=[], events=events)
    try:
        runner = env.create_worker_runner(master_host, master_port)
    except ConnectionError:
        raise UserError(
            f"no pacsbench master answered at {master_host}:{master_port} within {join_timeout:g} s"
        ) from None
    side = WorkerSide(env, master_host)
    runner.register_message(load.SETUP, side.on_setup, concurrent=True)
    runner.register_message(load.TARGET, side.on_target)
    env.events.report_to_master.add_listener(side.on_report)
    env.events.test_stop.add_listener(side.on_test_stop)
    runner.send_message(load.HELLO, {"worker": WORKER_ID})
    try:
        runner.greenlet.join()
    finally:
        side.close()
    return 0
