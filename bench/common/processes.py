"""Local processes and ports: a free port, a port check, stopping a process group. One copy each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from bench.common.errors import UserError


def free_local_port() -> int:
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


def stop_process_group(process: subprocess.Popen | None, grace: float) -> int | None:
    """SIGTERM the process group, SIGKILL after `grace` seconds; the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children (forked per association) too
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    return process.returncode
