"""The load stage: locust runs the scenario's users, in this process or as master + workers.

Importing this module imports locust, which monkey-patches the process for gevent: import
it before anything that opens a socket or starts a thread. The harness's sockets are then
cooperative; real threads inside locust are never used for DICOM.

Local mode: the users run here. Distributed mode (`--workers N`, and workers joining from
other machines with `pacsbench worker --master HOST`): this process is locust's master.
Each worker says hello, has its clock measured (bench.load.clock: its rows' times are put on
the master's clock as they arrive), gets the scenario (custom message), loads the study pool (cached),
starts its own Storage SCP when workstations C-MOVE, and reports ready with that SCP's
address; only then does the target start (a native archive needs every C-MOVE
destination in its configuration). A worker's users fire request events into its own rows
listener; the rows ride to the master in locust's worker reports (`report_to_master`, and a
last report when its users stop), so one samples.csv holds them all.

With `web` (bench.load.web), locust's web UI is served on this process's runner (the master's, when
distributed) from the load's start; its stop button ends the load as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from locust.env import Environment
from locust.runners import STATE_INIT, STATE_RUNNING, STATE_STOPPED
from locust.stats import CSV_STATS_INTERVAL_SEC, PERCENTILES_TO_REPORT, StatsCSVFileWriter
from locust.web import WebUI
from tqdm import tqdm

from bench.common.errors import UserError
from bench.dicom.peer import Peer
from bench.dicom.storage_scp import StorageSCP
from bench.load.clock import CLOCK_PING, CLOCK_PONG, ClockProbe, Exchange
from bench.load.roles import user_classes
from bench.load.shapes import make_shape
from bench.load.users import LoadContext
from bench.load.web import WebSettings, create_web_ui, serve_web_ui
from bench.results.samples import RunRecords, on_master_clock
from bench.scenario.file import Scenario, archive_in_namespace
from bench.studies.pool import StudyPool

HELLO, SETUP, READY, FAILED, TARGET, LAST_REPORT = (
    f"pacsbench_{m}" for m in ("hello", "setup", "ready", "failed", "target", "last_report")
)
REPORT_KEY = "pacsbench_rows"  # the rows in a worker report
WORKER_JOIN_TIMEOUT = 120.0  # workers load the study pool before they are ready
WORKER_EXIT_TIMEOUT = 30.0
END_MARGIN = 30.0  # beyond duration + stop_timeout, a run that has not ended is stopped anyway
STOP_CHECK_INTERVAL = 1.0  # seconds between two calls of a run's stop check
WEB_UI_START_WAIT = 5.0  # at most this long for a shape's first tick before the web UI is served anyway


@dataclass
class LoadOutcome:
    started: float
    ended: float
    samples: int
    interrupted: bool
    steps: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    stop_reason: str | None = None  # why the run's stop check ended the load early (None: it ran its course)


def needs_scp(scenario: Scenario) -> bool:
    """A C-MOVE destination: workstations that move, or modalities that move their study back."""
    ws = scenario.users.workstation
    moving = any(g.move_after and g.count != 0 for g in scenario.users.modality_groups().values())
    return moving or (ws is not None and ws.retrieve == "move" and ws.count != 0)


def scp_bind_host(advertised: str, archive_behind_veth: bool = False) -> str:
    """Loopback when the archive reaches us there, else every interface.

    An archive in a namespace of its own reaches a loopback destination at the veth's host end
    instead, whose address is only chosen when the archive starts, after the SCPs listen."""
    return "127.0.0.1" if advertised.startswith("127.") and not archive_behind_veth else "0.0.0.0"


def start_scp(scenario: Scenario, ae_title: str, port: int, advertised: str) -> StorageSCP:
    client, ws = scenario.client, scenario.users.workstation
    bind = scp_bind_host(advertised, archive_in_namespace(scenario))
    digests = ws is not None and ws.check_digests
    try:
        return StorageSCP(ae_title, bind, port, digests=digests, timeout=client.timeout).start()
    except OSError as exc:
        raise UserError(f"cannot listen for C-MOVE on port {port}: {exc}") from None


class LoadEngine:
    """Set up with start() (returns the C-MOVE destinations), run(peer) once, close()."""

    def __init__(
        self,
        scenario: Scenario,
        pools: dict[str, StudyPool],
        run_dir: Path,
        workers: int = 0,
        remote_workers: int = 0,
        master_bind: str = "127.0.0.1",
        master_port: int = 0,
        progress: bool = True,
        join_timeout: float = WORKER_JOIN_TIMEOUT,
        web: WebSettings | None = None,
        extensions: Sequence[Callable[..., None]] = (),
    ):
        self.scenario, self.pools, self.run_dir = scenario, pools, run_dir
        self.workers, self.remote_workers = workers, remote_workers
        self.master_bind, self.master_port = master_bind, master_port
        self.progress = progress
        self.join_timeout = join_timeout
        self.records = RunRecords(run_dir)
        self.shape = make_shape(scenario.load)
        self.context = LoadContext(scenario, pools)
        self.env: Environment | None = None
        self.processes: list[subprocess.Popen] = []
        self.joined: dict[str, dict] = {}  # per worker (by locust node id): what run.json["workers"] records
        self.clock_probes: dict[str, ClockProbe] = {}
        self.failures: list[str] = []
        self.stop_reason: str | None = None
        self.web, self.extensions = web, extensions  # extensions: locust init listeners (the live page)
        self.web_ui: WebUI | None = None
        self._web_history: gevent.Greenlet | None = None
        self.stop_pressed = False  # the web UI's stop button: the load ends as on Ctrl-C
        self._quit = False

    @property
    def distributed(self) -> bool:
        return self.workers + self.remote_workers > 0

    def _environment(self) -> Environment:
        # Its own locust Events (not locust's module-wide one): this run's rows listener
        # leaves with it, and a later run in the same process starts clean.
        env = Environment(
            user_classes=user_classes(self.scenario, self.context),
            stop_timeout=self.scenario.load.stop_timeout,
            shape_class=self.shape,
        )
        env.events.request.add_listener(self.records.on_request)
        for listener in self.extensions:
            env.events.init.add_listener(listener)
        return env

    def _create_web_ui(self) -> None:
        if self.web is not None:
            self.web_ui = create_web_ui(self.env, self.web, self._on_stop_pressed)

    def _serve_web_ui(self) -> None:
        """locust's web UI, served once the load has started: a page loaded while the runner is "ready"
        shows locust's start form and never polls again, so the UI appears with the running load."""
        if self.web_ui is None:
            return
        deadline = time.monotonic() + WEB_UI_START_WAIT
        while self.env.runner.state == STATE_INIT and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self._web_history = serve_web_ui(self.web_ui, self.web)

    def _on_stop_pressed(self) -> None:
        if not self.stop_pressed:
            print("pacsbench: the web UI's stop button ended the load", file=sys.stderr, flush=True)
        self.stop_pressed = True

    def start(self) -> dict[str, tuple[str, int]]:
        """Bring up the load processes; return {AE title: (host, port)} of the harness's Storage SCPs."""
        self.env = self._environment()
        if not self.distributed:
            self.env.create_local_runner()
            self._create_web_ui()
            if not needs_scp(self.scenario):
                return {}
            client = self.scenario.client
            host = client.scp_host or "127.0.0.1"
            self.context.scp = start_scp(self.scenario, client.move_destination, client.scp_port, host)
            self.context.destination_ae = client.move_destination
            return {client.move_destination: (host, self.context.scp.port)}
        runner = self.env.create_master_runner(self.master_bind, self.master_port)
        self.master_port = runner.server.port if self.master_port == 0 else self.master_port
        self._create_web_ui()
        runner.register_message(HELLO, self._on_hello)
        runner.register_message(CLOCK_PONG, self._on_clock_answer)
        runner.register_message(READY, self._on_ready)
        runner.register_message(FAILED, self._on_failed)
        runner.register_message(LAST_REPORT, _on_last_report)
        self.env.events.worker_report.add_listener(self._on_worker_report)
        self._spawn_local_workers()
        self._wait_for_workers()
        return {w["ae"]: (w["host"], w["port"]) for w in self.joined.values() if w.get("port")}

    # -- master side of the worker protocol -----------------------------------------------
    def _on_hello(self, environment, msg) -> None:
        """A worker joined: measure its clock first (its set-up loads the pool, which would slow the answers)."""
        node = msg.node_id
        self.joined[node] = {
            "worker": msg.data["worker"],
            "index": len(self.joined),
            "state": "measuring clock",
            "host_name": msg.data.get("host_name", ""),
            "address": msg.data.get("address", ""),
        }
        self.clock_probes[node] = ClockProbe(
            lambda data: environment.runner.send_message(CLOCK_PING, data, client_id=node),
            lambda best: self._clock_measured(environment, node, best),
        )
        self.clock_probes[node].start()

    def _on_clock_answer(self, environment, msg) -> None:
        self.clock_probes[msg.node_id].on_answer(msg.data)

    def _clock_measured(self, environment, node: str, best: Exchange) -> None:
        self.joined[node].update(
            clock_offset_seconds=best.offset, clock_round_trip_seconds=best.round_trip, state="setting up"
        )
        self._send_setup(environment, node)

    def _send_setup(self, environment, node: str) -> None:
        index = self.joined[node]["index"]
        client = self.scenario.client
        single = self.workers + self.remote_workers == 1
        ae = (
            (client.move_destination if single else f"{client.move_destination}{index}")
            if needs_scp(self.scenario)
            else ""
        )
        port = client.scp_port + index if client.scp_port else 0
        environment.runner.send_message(
            SETUP,
            {"scenario": self.scenario.model_dump(exclude_unset=True), "ae": ae, "scp_port": port, "index": index},
            client_id=node,
        )

    def _on_ready(self, environment, msg) -> None:
        self.joined[msg.node_id].update(msg.data, state="ready")

    def _on_failed(self, environment, msg) -> None:
        self.failures.append(f"worker {msg.data['worker']}: {msg.data['error']}")

    def _on_worker_report(self, client_id: str, data: dict) -> None:
        """Rows from a worker (periodic report or last report) go to this run's files, on the master's clock.

        The one place a worker's times are corrected: each row arrives in one batch, once."""
        if data.get(REPORT_KEY):
            offset = self.joined[client_id]["clock_offset_seconds"]  # measured before the worker got its users
            self.records.add_batch(on_master_clock(data[REPORT_KEY], offset))

    def _spawn_local_workers(self) -> None:
        command = [
            sys.executable,
            "-m",
            "bench.cli",
            "worker",
            "--master",
            "127.0.0.1",
            "--master-port",
            str(self.master_port),
        ]
        for number in range(self.workers):
            log = (self.run_dir / f"worker-{number + 1}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )

    def _wait_for_workers(self) -> None:
        expected = self.workers + self.remote_workers
        deadline = time.monotonic() + self.join_timeout
        while time.monotonic() < deadline:
            if self.failures:
                raise UserError(self.failures[0])
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise UserError(
                    f"a worker process exited with status {dead[0].returncode} before it was ready "
                    f"(see {self.run_dir}/worker-*.log)"
                )
            if sum(w["state"] == "ready" for w in self.joined.values()) >= expected:
                return
            gevent.sleep(0.1)
        ready = sum(w["state"] == "ready" for w in self.joined.values())
        where = (
            f"; remote workers join with: pacsbench worker --master HOST --master-port {self.master_port}"
            if self.remote_workers
            else ""
        )
        raise UserError(f"{ready} of {expected} workers ready within {self.join_timeout:g} s{where}")

    # -- the run --------------------------------------------------------------------------
    def run(self, peer: Peer, stop_check: Callable[[], str | None] | None = None) -> LoadOutcome:
        """The load, to its end or until `stop_check` (called once a second) gives a reason to stop.

        Stopping early is the same stop as the end's: users stop and the requests in flight
        finish (stop_timeout); the reason is in the outcome."""
        env, load = self.env, self.scenario.load
        runner = env.runner
        self.context.peer = peer
        if self.distributed:
            runner.send_message(
                TARGET,
                {"host": peer.host, "port": peer.port, "ae_title": peer.ae_title, "dicomweb_url": peer.dicomweb_url},
            )
        csv_writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(self.run_dir / "locust"), full_history=True)
        csv_greenlet = gevent.spawn(_locust_csv, csv_writer)
        progress = gevent.spawn(_progress, env, load.duration, self.records, self.progress)
        watch = gevent.spawn(self._watch, stop_check) if stop_check else None
        started, interrupted = time.time(), False
        try:
            if self.shape is not None:
                runner.start_shape()
            else:
                runner.start(load.users, spawn_rate=load.spawn_rate or load.users)
            self._serve_web_ui()
            self._wait_until_done(started)
            interrupted = self.stop_pressed
        except KeyboardInterrupt:
            interrupted = True
        finally:
            runner.stop()  # users finish the request in flight (bounded by stop_timeout); workers ship their rows
            runner.quit()
            self._quit = True
            ended = time.time()
            progress.kill()
            if watch is not None:
                watch.kill()
            gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)  # one more pass so locust's CSVs hold the final counts
            csv_greenlet.kill()
            with contextlib.suppress(OSError):  # locust's summary CSVs on a full disk: samples.csv is the record
                csv_writer.close_files()
            self.records.close()
        steps = list(getattr(self.shape, "began", []))
        return LoadOutcome(
            started, ended, self.records.samples, interrupted, steps, list(self.joined.values()), self.stop_reason
        )

    def _watch(self, stop_check: Callable[[], str | None]) -> None:
        while self.stop_reason is None:
            gevent.sleep(STOP_CHECK_INTERVAL)
            self.stop_reason = stop_check()

    def _wait_until_done(self, started: float) -> None:
        load = self.scenario.load
        end = started + load.duration
        while time.time() < end and self._going():
            gevent.sleep(min(0.5, max(0.0, end - time.time())))
            if self._all_users_finished():
                return  # a complete run, ended before its duration: every modality sent its `studies`

        if self.shape is not None and self._going():  # the shape stops the run itself at its last tick
            deadline = end + load.stop_timeout + END_MARGIN
            while self.env.runner.state != STATE_STOPPED and time.time() < deadline and self._going():
                gevent.sleep(0.2)

    def _all_users_finished(self) -> bool:
        """Every user stopped itself (modalities with a `studies` count that sent them all): the run is over.

        Only when every group has such a count: other users never stop on their own, and before
        the spawn is complete a count of zero means nothing."""
        groups = self.scenario.users.groups()
        finite = all(getattr(g, "studies", None) is not None or g.count == 0 for g in groups.values())
        runner = self.env.runner
        return finite and runner.state == STATE_RUNNING and runner.user_count == 0

    def _going(self) -> bool:
        return self.stop_reason is None and not self.stop_pressed

    def close(self) -> None:
        """Stop the web UI and this process's SCP, and wait for local workers (quit by the master) to exit."""
        if self.web_ui is not None:
            if self.web_ui.server is not None:  # served: the load had begun
                self.web_ui.stop()
            for greenlet in (self.web_ui.greenlet, self._web_history):
                if greenlet is not None:
                    greenlet.kill(block=False)
            self.web_ui = None
        if self.env is not None and self.env.runner is not None and not self._quit:
            self.env.runner.quit()  # a run that failed before its load still releases its workers
            self._quit = True
        if self.context.scp:
            self.context.scp.stop()
        deadline = time.monotonic() + WORKER_EXIT_TIMEOUT
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.records.close()


def _progress(env: Environment, duration: float, records, enabled: bool) -> None:
    """The load's progress bar, on a terminal only (tqdm's disable=None): piped output stays clean."""
    with tqdm(total=int(duration), unit="s", desc="load", disable=None if enabled else True, leave=False) as bar:
        for _ in range(int(duration)):
            gevent.sleep(1.0)
            bar.update(1)
            bar.set_postfix(requests=records.samples, users=env.runner.user_count if env.runner else 0)


def _locust_csv(csv_writer: StatsCSVFileWriter) -> None:
    """locust's summary CSVs, once a second; a full disk ends them quietly (the run's stop check sees it)."""
    with contextlib.suppress(OSError):
        csv_writer.stats_writer()


def _on_last_report(environment: Environment, msg) -> None:
    """A worker's last report, sent when its users stopped: the same worker_report event as
    locust's periodic ones, so its statistics and rows reach the same listeners."""
    environment.events.worker_report.fire(client_id=msg.node_id, data=msg.data)


def local_address_towards(host: str) -> str:
    """The address of this machine on the route to `host` (what a peer there can reach us at)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
