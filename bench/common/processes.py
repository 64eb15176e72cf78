"""Local processes and ports: a free port, a port check, running a tool with a time limit, stopping a process
(group), dying with the harness, a SIGTERM that lets the harness clean up.

One copy each.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.common.errors import UserError

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """A one-line error now rather than an archive or QEMU failing to bind later."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UserError(f"port 127.0.0.1:{port} is in use ({exc.strerror}): choose another 'port'") from None


def stop_process(process: subprocess.Popen | None, grace: float, group: bool = False) -> int | None:
    """SIGTERM, SIGKILL after `grace` seconds; the exit code.

    With `group` (a process started with start_new_session=True), both signals go to its
    whole process group, and the SIGKILL goes even after the leader exited: children forked
    per association must not outlive it.
    """
    if process is None:
        return None

    def send(signum: int) -> None:
        try:
            if group:
                os.killpg(process.pid, signum)
            else:
                process.send_signal(signum)
        except (ProcessLookupError, PermissionError):
            pass

    if process.poll() is None:
        send(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if group or process.poll() is None:
        send(signal.SIGKILL)
    process.wait()
    return process.returncode


def signal_group(leader: int, signum: int) -> None:
    """`signum` to the process group `leader` started (start_new_session=True); nothing if it is gone."""
    try:
        os.killpg(leader, signum)
    except ProcessLookupError:
        pass


def reap_group(process: subprocess.Popen, timeout: float) -> int:
    """Wait until a signalled group leader exits (SIGKILL to its group after `timeout`), then SIGKILL what is
    left of the group: nothing of it may outlive it and hold its ports. Its exit code."""
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_group(process.pid, signal.SIGKILL)
        code = process.wait()
    signal_group(process.pid, signal.SIGKILL)
    return code


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """In a child before exec (Popen's preexec_fn): `signum` when the harness dies, even by SIGKILL (Linux prctl).

    Whatever ends the harness (a crash, SIGTERM, SIGKILL), the archives and guests it started
    must not keep running and holding the disk. The kernel sends the signal when the thread
    that forked the child exits: the harness starts targets from its main thread.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)


def end_with_parent() -> None:
    """die_with_parent with SIGTERM: an archive that stops cleanly (in-flight stores finish, workers end)."""
    die_with_parent(signal.SIGTERM)


def ending_with_parent(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A preexec_fn for an archive: end_with_parent, then `then` (a Budget's enter) when given."""

    def preexec() -> None:
        end_with_parent()
        if then is not None:
            then()

    return preexec


class _SigtermInterrupt:
    """SIGTERM becomes one KeyboardInterrupt in the harness's main flow, where a Ctrl-C would be handled.

    A Python signal handler runs in whatever code the main thread executes at that moment. Under
    gevent (locust) that may be a pynetdicom association thread or a Storage SCP connection
    (threading's excepthook prints the exception and the run goes on, ends and exits 0), or an
    at-fork callback of logging (the exception is ignored and logging's lock stays held: the run
    hangs). So under gevent the signal is taken by the hub (gevent.signal_handler) and the
    interrupt thrown into the main greenlet, whose `finally` blocks stop the target and remove a
    namespace. Only the first SIGTERM interrupts: a second one must not cut that clean-up short.
    Inside `deferred()` (creating the run folder, the clean-up itself) a SIGTERM waits until the
    block has run.
    """

    def __init__(self) -> None:
        self.installed = False
        self.delivered = False  # the interrupt went out: the harness is already stopping
        self.pending = False  # a SIGTERM arrived inside deferred()
        self.deferring = 0
        self.main: object | None = None  # the main greenlet under gevent; None in a plain process
        self.watcher: object | None = None  # gevent's signal watcher (kept alive while installed)

    def install(self) -> None:
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        gevent = _gevent_in_use()
        if gevent is not None:
            self.main = gevent.get_hub().parent  # the thread's main greenlet, whichever greenlet installs
            self.watcher = gevent.signal_handler(signal.SIGTERM, self.on_signal)
        elif signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: self.on_signal())
        else:
            return  # someone else's handler: theirs to keep
        self.installed = True

    def on_signal(self) -> None:
        if self.delivered:
            return
        if self.deferring:
            self.pending = True
            return
        self.deliver()

    def deliver(self) -> None:
        self.delivered = True
        gevent = _gevent_in_use()
        if self.main is None or gevent is None or gevent.getcurrent() is self.main:
            raise KeyboardInterrupt
        gevent.kill(self.main, KeyboardInterrupt)  # raised where the main greenlet waits, once the hub runs

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring += 1
        try:
            yield
        finally:
            self.deferring -= 1
        if not self.deferring and self.pending:
            self.pending = False
            self.deliver()


def _gevent_in_use():
    """gevent's module when this process is monkey-patched (locust's verbs), else None. Looked up, never imported:
    the stages that must not load gevent import this module too."""
    monkey = sys.modules.get("gevent.monkey")
    return sys.modules["gevent"] if monkey is not None and monkey.is_module_patched("threading") else None


_SIGTERM = _SigtermInterrupt()


def interrupt_on_sigterm() -> None:
    """SIGTERM becomes KeyboardInterrupt in the main flow (once), so the `finally` that stops QEMU, an archive or
    removes a namespace runs. Safe to call again."""
    _SIGTERM.install()


def sigterm_deferred() -> contextlib.AbstractContextManager[None]:
    """A block a SIGTERM must not cut in two (creating the run folder, the clean-up): the interrupt comes after it."""
    return _SIGTERM.deferred()


def run(cmd: list[str], timeout: float, log: Path | None = None, what: str = "", **kwargs) -> str:
    """Run a command; its output goes to `log` (appended) or is returned. Failures become UserError."""
    what = what or Path(cmd[0]).name
    try:
        if log is None:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
            output = done.stdout + done.stderr
        else:
            with log.open("a") as out:
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kwargs)
            output = ""
    except subprocess.TimeoutExpired:
        raise UserError(f"{what} did not finish within {timeout:g} s" + (f" (see {log})" if log else "")) from None
    if done.returncode != 0:
        detail = last_line(output) if log is None else f"see {log}"
        raise UserError(f"{what} failed with exit status {done.returncode}: {detail}")
    return done.stdout if log is None else ""


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
