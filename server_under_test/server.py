"""The reference archive's processes: a supervisor and N workers sharing one listening socket.

The supervisor binds the port, prepares the index, forks the workers (each accepts
associations on the inherited socket, one thread per association, so every core works; a worker with more
associations than another leaves new ones to it: services.connection.ConnectionBalance),
then runs the tier migrator and, with a metrics port, the HTTP pages (status_pages.py). With a DICOMweb port the
supervisor binds that socket too, and every worker serves DICOMweb on it (dicomweb/app.py) beside DIMSE, through
the same store and index. SIGTERM or Ctrl-C: the workers stop accepting, finish the requests in flight, abort idle
associations, and exit.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from server_under_test import __version__
from server_under_test.config import (
    AT_CAPACITY_POLICIES,
    DUPLICATE_POLICIES,
    ArchiveConfig,
    ConfigError,
    load_config,
    parse_size,
    with_overrides,
)

log = logging.getLogger("server_under_test")
LISTEN_BACKLOG = 512
READY_TIMEOUT = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_supervisor(supervisor_pid: int) -> None:
    """SIGTERM this worker when its supervisor dies, even by SIGKILL: nobody else would stop it.

    The check after the prctl covers a supervisor that died before it took effect."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:
        os._exit(0)


# -- worker process --------------------------------------------------------------------
def worker_main(
    config: ArchiveConfig,
    listener: socket.socket,
    ready,
    number: int,
    supervisor_pid: int,
    slots,
    web_listener=None,
    web_connections=None,
) -> None:
    end_with_supervisor(supervisor_pid)
    from server_under_test.metrics import Metrics
    from server_under_test.services.connection import (
        ACCEPT_POLL_SECONDS,
        HAND_OFF_SECONDS,
        Shared,
        handle_connection,
        quiet_pydicom,
        supported_contexts,
    )
    from server_under_test.services.store import StoreService
    from server_under_test.storage.files import TierSet
    from server_under_test.storage.index import Index, index_path
    from server_under_test.storage.recycling import Recycler

    quiet_pydicom()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    synchronous = "FULL" if config.fsync else "OFF"
    index = Index(index_path(config.data), synchronous, capacity=config.capacity)
    tiers = TierSet(config.storage_tiers, config.fsync, config.direct_io)
    recycler = None
    if config.capacity and config.at_capacity == "recycle":
        recycler = Recycler(index.path, tiers, config.capacity, synchronous, quiet_seconds=config.migration_min_age)
    shared = Shared(
        config,
        index,
        StoreService(index, tiers, config.duplicates, recycler),
        Metrics(),
        supported_contexts(),
        stopping,
        slots,
        number,
    )
    web = start_dicomweb(config, web_listener, web_connections, shared) if web_listener is not None else None
    ready.put(os.getpid())
    listener.setblocking(False)  # every worker is woken by a new connection: those that lose the race move on
    waiting = select.poll()
    waiting.register(listener, select.POLLIN)
    threads: list[threading.Thread] = []
    while not stopping.is_set():
        slots.balance.beat(number)
        if not waiting.poll(ACCEPT_POLL_SECONDS * 1000):
            threads = [t for t in threads if t.is_alive()]
            continue
        if slots.balance.leave_to_another(number):  # a worker with fewer connections takes it
            time.sleep(HAND_OFF_SECONDS)
            continue
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another worker took it
        except OSError as exc:
            log.error("worker %d: accept failed: %s", number, exc)
            time.sleep(0.1)
            continue
        sock.setblocking(True)
        counted = slots.take(number)  # here, not in the thread: the next accept decision sees it
        thread = threading.Thread(target=handle_connection, args=(shared, sock, peer, counted), name=f"assoc-{peer}")
        thread.start()
        threads.append(thread)
    listener.close()
    deadline = time.monotonic() + config.shutdown_grace
    if web is not None:
        web.stop()  # finishes the requests in flight within the grace
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    index.close()
    os._exit(0)  # skip inherited atexit handlers of the supervisor


def start_dicomweb(config: ArchiveConfig, web_listener: socket.socket, web_connections, shared):
    """This worker's DICOMweb server on the shared DICOMweb socket, through the worker's own store and index."""
    from server_under_test.dicomweb.app import DicomwebServer

    server = DicomwebServer(
        web_listener,
        shared.index,
        shared.store,
        config.dicomweb,
        config.worker_count,
        config.shutdown_grace,
        shared.worker,
        web_connections,
    )
    server.start()
    return server


# -- supervisor ------------------------------------------------------------------------
class Supervisor:
    def __init__(self, config: ArchiveConfig):
        self.config = config
        self.started = time.time()
        self.listener: socket.socket | None = None
        self.web_listener: socket.socket | None = None  # DICOMweb's, with a DICOMweb port
        self.workers: list = []
        self.pages = None  # the HTTP /metrics and /status, with a metrics port
        self.stop = threading.Event()
        self.migrator = None
        self.tiers = None
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="pacsbench-archive-metrics-"))

    @property
    def index_path(self) -> Path:
        from server_under_test.storage.index import index_path

        return index_path(self.config.data)

    def prepare(self) -> None:
        from server_under_test.metrics import prepare_multiprocess_dir
        from server_under_test.storage.files import FileStore
        from server_under_test.storage.index import create_schema, drop_all_claims

        prepare_multiprocess_dir(self.metrics_dir)
        self.config.data.mkdir(parents=True, exist_ok=True)
        create_schema(self.index_path)
        drop_all_claims(self.index_path)
        for tier in self.config.storage_tiers:
            removed = FileStore(tier.path, self.config.fsync, direct_io=False).remove_leftover_temp_files()
            if removed:
                log.info("tier %s: removed %d unacknowledged temp files left by a crash", tier.name, removed)
        self.listener = socket.create_server((self.config.host, self.config.port), backlog=LISTEN_BACKLOG)
        if self.config.dicomweb is not None and self.config.dicomweb.port:
            address = (self.config.host, self.config.dicomweb.port)
            try:
                self.web_listener = socket.create_server(address, backlog=LISTEN_BACKLOG)
            except OSError as exc:  # main names the DICOM port: say which one failed
                self.listener.close()
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise OSError(exc.errno, f"{reason} (the DICOMweb port {address[1]})") from None

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @property
    def dicomweb_url(self) -> str | None:
        if self.web_listener is None:
            return None
        return f"http://{self.config.host}:{self.web_listener.getsockname()[1]}/dicom-web"

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def start_workers(self) -> None:
        # Imported once here, not in every forked worker.
        from server_under_test.services.connection import AssociationSlots, ConnectionBalance

        context = multiprocessing.get_context("fork")
        ready = context.SimpleQueue()
        self.slots = AssociationSlots(self.config.max_associations, self.config.worker_count, context)
        # Each worker's open DICOMweb connections: a busier worker leaves new ones to the others.
        self.web_connections = ConnectionBalance(self.config.worker_count, context) if self.web_listener else None
        for number in range(self.config.worker_count):
            self.workers.append(self._spawn(context, ready, number))
        deadline = time.monotonic() + READY_TIMEOUT
        started = 0
        while started < len(self.workers) and time.monotonic() < deadline:
            if not ready.empty():
                ready.get()
                started += 1
            elif any(not w.is_alive() for w in self.workers):
                raise RuntimeError("a worker process exited during start-up")
            else:
                time.sleep(0.02)
        if started < len(self.workers):
            raise RuntimeError("workers did not become ready in time")
        self._ready_queue, self._context = ready, context

    def _spawn(self, context, ready, number: int):
        self.slots.clear(number)  # a worker that died took its connections with it
        if self.web_connections is not None:
            self.web_connections.clear(number)
        process = context.Process(
            target=worker_main,
            args=(
                self.config,
                self.listener,
                ready,
                number,
                os.getpid(),
                self.slots,
                self.web_listener,
                self.web_connections,
            ),
            name=f"archive-worker-{number}",
            daemon=False,
        )
        process.start()
        return process

    def start_services(self) -> None:
        from server_under_test.metrics import Metrics
        from server_under_test.storage.files import TierSet
        from server_under_test.storage.migration import Migrator

        self.tiers = TierSet(self.config.storage_tiers, self.config.fsync, self.config.direct_io)
        self.migrator = Migrator(self.config, self.index_path, self.tiers, Metrics())
        threading.Thread(target=self.migrator.run, args=(self.stop,), name="migrator", daemon=True).start()
        if self.config.metrics is not None:
            from server_under_test.status_pages import StatusPages

            self.pages = StatusPages(self, self.config.metrics.host, self.config.metrics.port)

    def watch(self) -> None:
        """Until asked to stop: replace any worker that dies (a crash must not shrink the archive)."""
        from server_under_test.metrics import process_exited

        while not self.stop.wait(0.5):
            for i, worker in enumerate(self.workers):
                if not worker.is_alive() and not self.stop.is_set():
                    log.error("worker %d (pid %s) exited with %s: starting a new one", i, worker.pid, worker.exitcode)
                    process_exited(worker.pid)
                    self.workers[i] = self._spawn(self._context, self._ready_queue, i)

    def shutdown(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_grace + 5
        for worker in self.workers:
            worker.join(max(0.1, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join()
        if self.pages:
            self.pages.shutdown()
        if self.listener:
            self.listener.close()
        if self.web_listener:
            self.web_listener.close()
        import shutil

        shutil.rmtree(self.metrics_dir, ignore_errors=True)


# -- command line ----------------------------------------------------------------------
def parse_args(argv: list[str] | None, prog: str) -> tuple[ArchiveConfig, Path | None]:
    """The archive's settings (the config file, then the options) and the ready file's path, if asked for."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="pacsbench reference archive: C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET over a durable store "
        "(temp file, fsync, rename) and a SQLite index, on ordered storage tiers. Runs until SIGTERM or Ctrl-C.",
        epilog="Settings come from --config (TOML; see server_under_test/config.py for every key); "
        "options given here override the file. Backup and restore: `python -m server_under_test backup|restore` "
        "(see its --help).",
    )
    parser.add_argument("--config", type=Path, help="archive configuration file (TOML)")
    parser.add_argument("--aet", dest="ae_title", help="AE title to answer as (default PACSBENCH)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, help="DICOM port (default 11112; 0 picks a free one)")
    parser.add_argument("--data", type=Path, help="folder for the index and the default tier (default ./archive-data)")
    parser.add_argument("--workers", type=int, help="processes accepting associations (default: one per CPU)")
    parser.add_argument("--max-associations", type=int, help="concurrent associations, all workers (default 64)")
    parser.add_argument(
        "--artim-timeout",
        type=_seconds_option,
        metavar="SECONDS",
        help="seconds a new connection has to complete its association request (default 30)",
    )
    parser.add_argument("--max-pdu", type=int, help="largest PDU we receive, bytes (default 1048576; 0 = unlimited)")
    parser.add_argument(
        "--duplicates", choices=DUPLICATE_POLICIES, help="same SOP Instance UID again (default overwrite)"
    )
    parser.add_argument("--metrics-port", type=int, help="serve /metrics and /status on this HTTP port (0 = any free)")
    parser.add_argument(
        "--dicomweb-port",
        type=int,
        metavar="PORT",
        help="serve DICOMweb (STOW-RS, QIDO-RS, WADO-RS) at http://HOST:PORT/dicom-web on the same storage and "
        "index (default off; 0 = off; bounds in the config file's [dicomweb] table)",
    )
    parser.add_argument(
        "--capacity",
        type=_size_option,
        metavar="SIZE",
        help="bytes the archive may store, e.g. '4 GB' (default 0 = unlimited)",
    )
    parser.add_argument(
        "--at-capacity",
        choices=AT_CAPACITY_POLICIES,
        help="at the capacity: reject (A700, the default) or recycle the oldest studies",
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        default=None,
        help="skip fsync (experiments only: an acknowledged instance can be lost on power failure)",
    )
    parser.add_argument(
        "--no-direct-io",
        action="store_true",
        default=None,
        help="write received files through the page cache instead of with O_DIRECT",
    )
    parser.add_argument(
        "--check-called-aet",
        action="store_true",
        default=None,
        help="reject associations whose called AE title is not ours (default: answer any)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="once listening, write PATH (JSON: pid, version, AE title, host, DICOM port, metrics URL, "
        "data folder, workers, DICOMweb URL); removed on exit (server_under_test.ready reads it)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    metrics = None
    if args.metrics_port is not None:
        from server_under_test.config import MetricsEndpoint

        metrics = MetricsEndpoint(config.metrics.host if config.metrics else "127.0.0.1", args.metrics_port)
    dicomweb = config.dicomweb
    if args.dicomweb_port is not None:
        from server_under_test.config import DicomwebEndpoint

        dicomweb = replace(dicomweb or DicomwebEndpoint(), port=args.dicomweb_port)
    return with_overrides(
        config,
        dicomweb=dicomweb,
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        data=args.data,
        workers=args.workers,
        max_associations=args.max_associations,
        artim_timeout=args.artim_timeout,
        max_pdu=args.max_pdu,
        duplicates=args.duplicates,
        metrics=metrics,
        fsync=False if args.no_fsync else None,
        direct_io=False if args.no_direct_io else None,
        check_called_aet=args.check_called_aet,
        capacity=args.capacity,
        at_capacity=args.at_capacity,
    ), args.ready_file


def _seconds_option(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {value!r}")
    return seconds


def _size_option(value: str) -> int:
    try:
        return parse_size(value, "--capacity")
    except ConfigError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--capacity: ")) from None


def main(argv: list[str] | None = None, prog: str = "python -m server_under_test") -> int:
    try:
        config, ready_file = parse_args(argv, prog)
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # an earlier archive's must not be taken for ours
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s", stream=sys.stderr
    )
    supervisor = Supervisor(config)
    try:
        supervisor.prepare()
    except OSError as exc:
        print(f"{prog}: error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stop.set())
    try:
        supervisor.start_workers()
        supervisor.start_services()
    except (RuntimeError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        supervisor.shutdown()
        return 2
    try:
        announce(supervisor, ready_file)
    except OSError as exc:
        print(f"{prog}: error: cannot write the ready file {ready_file}: {exc.strerror or exc}", file=sys.stderr)
        supervisor.shutdown()
        return 2
    try:
        supervisor.watch()
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    log.info("stopping: finishing in-flight requests")
    supervisor.shutdown()
    return 0


def announce(supervisor: Supervisor, ready_file: Path | None) -> None:
    """Say that the archive listens: a line for humans, and the ready file for programs."""
    from server_under_test.ready import Ready, write_ready

    config = supervisor.config
    metrics = f" metrics {supervisor.pages.url}" if supervisor.pages else ""
    metrics += f" dicomweb {supervisor.dicomweb_url}" if supervisor.dicomweb_url else ""
    print(
        f"server_under_test {__version__} listening on {config.host}:{supervisor.port} AE {config.ae_title} "
        f"data {config.data} fsync {'on' if config.fsync else 'off'} workers {len(supervisor.workers)}{metrics}",
        flush=True,
    )
    if ready_file is not None:
        write_ready(
            ready_file,
            Ready(
                pid=os.getpid(),
                version=__version__,
                ae_title=config.ae_title,
                host=config.host,
                port=supervisor.port,
                metrics_url=supervisor.pages.url if supervisor.pages else None,
                data=str(config.data),
                workers=len(supervisor.workers),
                dicomweb_url=supervisor.dicomweb_url,
            ),
        )
