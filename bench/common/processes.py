"""Local processes and ports: a free port, a port check, stopping a process (group). One copy each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from bench.common.errors import UserError


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
