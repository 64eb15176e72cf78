"""A load worker process: joins a master (`pacsbench run --workers N`, or from another machine).

The protocol on top of locust's worker runner (see bench.load.engine): say hello, answer the master's clock requests
(bench.load.clock), receive the scenario, load the study pool in a native thread (the pool is CPU work; heartbeats must
keep flowing), start a Storage SCP when workstations C-MOVE, report ready, learn the target, then run the users the
master dispatches. The users' request events become rows here (the same listener as in a local run); the rows travel to
the master in locust's periodic worker reports and in one last report when the users stop.
"""

from __future__ import annotations

import socket
import time

import gevent
from locust.env import Environment

from bench.common.errors import UserError
from bench.dicom.peer import Peer
from bench.load import engine as load
from bench.load.clock import CLOCK_PING, answer_clock_ping
from bench.load.pools import prepare_pools
from bench.load.roles import user_classes
from bench.load.users import WORKER_ID, LoadContext
from bench.results.samples import RelayedRecords
from bench.scenario.file import Scenario

EXIT_DELAY_S = 1.0
MASTER_PROBE_INTERVAL_S = 0.5


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
        pools = gevent.get_hub().threadpool.apply(prepare_pools, (scenario,), {"progress": False})
        self.context = LoadContext(scenario, pools, user_prefix=f"w{data['index'] + 1}-")
        ready = {"worker": WORKER_ID}
        if data["ae"]:
            host = scenario.client.scp_host or load.local_address_towards(self.master_host)
            scp = load.start_scp(scenario, data["ae"], data["scp_port"], host)
            self.context.scp, self.context.destination_ae = scp, data["ae"]
            ready.update(ae=data["ae"], host=host, port=scp.port)
        self.env.user_classes[:] = user_classes(scenario, self.context)
        self.env.runner.send_message(load.READY, ready)

    def on_target(self, environment, msg) -> None:
        data = msg.data
        self.context.peer = Peer(data["host"], int(data["port"]), data["ae_title"], data.get("dicomweb_url"))

    def on_report(self, client_id: str, data: dict) -> None:
        batch = self.records.drain()
        if batch:
            data[load.REPORT_KEY] = batch

    def on_test_stop(self, environment, **_) -> None:
        # Locust sends a worker's last report on the master's "quit", which this worker does not
        # wait for (below): gather the same report now (statistics and rows, through the
        # report_to_master listeners) and send it before locust's "client_stopped", so the
        # master has every row and count when it sees this worker stop.
        report: dict = {}
        environment.events.report_to_master.fire(client_id=environment.runner.client_id, data=report)
        environment.runner.send_message(load.LAST_REPORT, report)
        # One test per worker process: leave once locust has told the master (its stop handler
        # would otherwise sleep stop_timeout before it reads the master's "quit").
        gevent.spawn_later(EXIT_DELAY_S, environment.runner.quit)

    def close(self) -> None:
        if self.context and self.context.scp:
            self.context.scp.stop()


def master_listening(host: str, port: int, timeout: float) -> bool:
    """Does the master's port accept a TCP connection within `timeout` seconds?

    Asked before locust joins: its worker retries for minutes (a module constant, not a
    setting), while `--join-timeout` promises the user an answer sooner.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(MASTER_PROBE_INTERVAL_S)


def run_worker(master_host: str, master_port: int, join_timeout: float = 60.0) -> int:
    if not master_listening(master_host, master_port, join_timeout):
        raise UserError(f"no pacsbench master answered at {master_host}:{master_port} within {join_timeout:g} s")
    env = Environment(user_classes=[])
    try:
        runner = env.create_worker_runner(master_host, master_port)
    except ConnectionError:  # something listens there, but not a locust master
        raise UserError(f"no pacsbench master answered at {master_host}:{master_port}") from None
    side = WorkerSide(env, master_host)
    runner.register_message(CLOCK_PING, answer_clock_ping)  # inline: the answer leaves at once
    runner.register_message(load.SETUP, side.on_setup, concurrent=True)
    runner.register_message(load.TARGET, side.on_target)
    env.events.request.add_listener(side.records.on_request)
    env.events.report_to_master.add_listener(side.on_report)
    env.events.test_stop.add_listener(side.on_test_stop)
    runner.send_message(
        load.HELLO,
        {"worker": WORKER_ID, "host_name": socket.gethostname(), "address": load.local_address_towards(master_host)},
    )
    try:
        runner.greenlet.join()
    finally:
        side.close()
    return 0
