"""The archive's ready file: how a caller learns that the archive listens, and where (JSON, written once it does).

The archive writes it atomically (a temporary name, then rename) once its port is bound and
its workers accept, at the path given by `--ready-file`, and removes it when it exits. A
caller that started the archive waits for it with `wait_for_ready`, which also notices the
archive dying first. It replaces parsing the "listening on" log line, which stays for humans.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Ready:
    """What a caller needs to reach a running archive."""

    pid: int  # the supervisor's (the process the caller started)
    version: str
    ae_title: str
    host: str
    port: int  # the DICOM port (the one picked, with --port 0)
    metrics_url: str | None  # http://host:port of /metrics and /status, when served
    data: str
    workers: int
    dicomweb_url: str | None = None  # http://host:port/dicom-web, when DICOMweb is served


class NotReady(Exception):
    """The archive did not become ready: the message is one line for the user."""


def write_ready(path: Path, ready: Ready) -> None:
    """Write the ready file atomically: a reader sees no file or the whole of it."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(asdict(ready), indent=2) + "\n")
    os.replace(temp, path)


def read_ready(path: Path) -> Ready | None:
    """The ready file's content, or None while there is none."""
    try:
        return Ready(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def wait_for_ready(path: Path, process, timeout: float) -> Ready:
    """Wait until the archive `process` (a subprocess.Popen) has written its ready file; what it says.

    A file left by an earlier archive (another pid) is not taken for this one's. NotReady when
    the process exits first or `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        ready = read_ready(path)
        if ready is not None and ready.pid == process.pid:
            return ready
        code = process.poll()
        if code is not None:
            raise NotReady(f"the archive exited with code {code} before it was ready")
        if time.monotonic() > deadline:
            raise NotReady(f"the archive did not become ready within {timeout:.0f} s (no ready file {path})")
        time.sleep(POLL_SECONDS)
