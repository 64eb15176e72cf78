"""An installed DICOM archive run as a local process: its own process group, output in a log, ready on C-ECHO.

Its own process group because dcmqrscp and storescp --fork fork per association: stopping
the group stops those children too. A parent-death signal (SIGTERM) stops it when the harness
dies, however it dies; forked children end with their associations, whose other end is gone.
TCP_NODELAY=1 in its environment: DCMTK and Orthanc read it, and without it each request can
stall ~40 ms on Nagle's algorithm.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench.common.processes import ending_with_parent, last_line, stop_process
from bench.dicom.peer import Peer
from bench.dicom.readiness import NoEchoAnswer, wait_for_echo

NODELAY_ENVIRONMENT = {"TCP_NODELAY": "1"}


class ArchiveProcess:
    """Start `command`, wait until `peer` answers C-ECHO, stop its process group."""

    def __init__(
        self,
        command: list[str],
        peer: Peer,
        log: Path,
        cwd: Path | None = None,
        preexec: Callable[[], None] | None = None,
    ):
        self.command, self.peer, self.log, self.cwd = command, peer, log, cwd
        self.preexec = preexec  # runs in the child before exec: a Budget's enter()
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None

    def start(self, calling_ae: str, timeout: float) -> float:
        """The seconds from launch to the first C-ECHO answer; NoEchoAnswer (process stopped) if none came."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=ending_with_parent(self.preexec),  # stops with the harness
                env={**os.environ, **NODELAY_ENVIRONMENT},
            )
        try:
            return wait_for_echo(self.peer, calling_ae, timeout, alive=self.alive)
        except NoEchoAnswer as exc:
            self.stop(0)
            raise NoEchoAnswer(self.peer, timeout, f"{self.last_log_line()} (see {self.log})") from exc

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_log_line(self) -> str:
        return last_line(self.log.read_text(errors="replace")) if self.log.exists() else "no output"

    def stop(self, grace: float) -> int | None:
        """SIGTERM to the group, SIGKILL after `grace` seconds; the exit code (stopping twice is harmless)."""
        if self.process is not None and self.exit_code is None:
            self.exit_code = stop_process(self.process, grace, group=True)
        return self.exit_code
