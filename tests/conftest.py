"""Shared fixtures: real tools (DCMTK, dciodvfy), a running reference archive, a private cache."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common.processes import free_local_port, stop_process
from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo as bench_wait_for_echo

free_port = free_local_port  # the tests' name for it

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_TOOLS = os.environ.get("PACSBENCH_REQUIRE_TOOLS") == "1"


def require_tool(path: str, package: str) -> str:
    """The tool's path; skip when absent, except in CI where absence is a failure."""
    if shutil.which(path):
        return path
    message = f"{path} not installed (apt-get install {package})"
    if REQUIRE_TOOLS:
        pytest.fail(message)
    pytest.skip(message)


def dciodvfy_problems(path: Path) -> list[str]:
    """The Error and Warning lines dicom3tools' dciodvfy prints for a file."""
    dciodvfy = require_tool("dciodvfy", "dicom3tools")
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def dataset_bytes(path: Path) -> bytes:
    """A DICOM file's dataset bytes (after the file meta group)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    meta_length = int.from_bytes(data[140:144], "little")
    return data[144 + meta_length:]


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep the study pool cache of the test session away from the user's."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("PACSBENCH_CACHE")
    os.environ["PACSBENCH_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("PACSBENCH_CACHE", None)
    else:
        os.environ["PACSBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_studies(tmp_path_factory) -> Path:
    """Two tiny synthetic studies on disk (generated once per test session)."""
    from bench.studies.generate import generate
    from bench.studies.profile import load_profile

    out = tmp_path_factory.mktemp("tiny-studies")
    generate(load_profile("tiny"), 2, 7, out, progress=False)
    return out


class RunningArchive:
    def __init__(self, process: subprocess.Popen, port: int, data: Path, ae_title: str):
        self.process, self.port, self.data, self.ae_title = process, port, data, ae_title

    @property
    def index(self) -> Path:
        return self.data / "index.sqlite"

    def stop(self) -> int:
        return stop_process(self.process, 30.0)


SERVER_MODULE = [sys.executable, "-m", "server_under_test"]
PACSBENCH_SERVE = [sys.executable, "-m", "bench.cli", "serve"]


def start_archive(data: Path, *extra: str, ae_title: str = "PACSBENCH", command=SERVER_MODULE) -> RunningArchive:
    data.parent.mkdir(parents=True, exist_ok=True)
    log = data.with_name(data.name + ".log")
    with log.open("ab") as stderr:  # a file, never a pipe nobody reads: a full pipe would stall the server
        process = subprocess.Popen(
            [*command, "--port", "0", "--aet", ae_title, "--data", str(data), *extra],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, start_new_session=True,
        )
    line = process.stdout.readline()
    match = re.search(r"listening on [^ ]+:(\d+) ", line)
    if not match:
        process.kill()
        raise RuntimeError(f"archive did not start: {line!r} {log.read_text()[-2000:]}")
    running = RunningArchive(process, int(match.group(1)), data, ae_title)
    running.log = log
    running.metrics_url = (re.search(r"metrics (http://\S+)", line) or [None, None])[1]
    return running


def wait_for_echo(port: int, ae_title: str, timeout: float = 20.0) -> None:
    """Wait until the DICOM peer on a local port answers C-ECHO."""
    bench_wait_for_echo(Peer("127.0.0.1", port, ae_title), "PACSBENCH-TEST", timeout)


@pytest.fixture
def archive(tmp_path):
    running = start_archive(tmp_path / "archive")
    yield running
    running.stop()


@pytest.fixture
def unused_port() -> int:
    return free_local_port()
