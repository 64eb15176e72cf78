"""The real tools the tests talk to, found or skipped: DCMTK, dciodvfy, Orthanc, QEMU, Chromium, root.

A test asks for a tool through the fixture of the same name (tests/conftest.py), which also marks
it (`pytest -m "not qemu"`). `require_tool` is the one place where a missing tool becomes a skip,
or, in CI (PACSBENCH_REQUIRE_TOOLS=1), a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REQUIRE_TOOLS = os.environ.get("PACSBENCH_REQUIRE_TOOLS") == "1"
# What each local target kind runs: its program and the Debian package that has it.
INSTALLED_KINDS = {"orthanc": ("/usr/sbin/Orthanc", "orthanc"), "dcmtk": ("/usr/bin/dcmqrscp", "dcmtk")}


def missing(message: str) -> None:
    """Skip the test, except in CI where a missing tool or privilege is a failure."""
    if REQUIRE_TOOLS:
        pytest.fail(message)
    pytest.skip(message)


def require_tool(path: str, package: str) -> str:
    """The tool's path (as given); skip when absent, except in CI where absence is a failure."""
    if shutil.which(path):
        return path
    missing(f"{path} not installed (apt-get install {package})")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        missing(f"needs root: {why}")


class Dcmtk:
    """DCMTK's command-line tools by name: `dcmtk.storescu` is /usr/bin/storescu (checked when asked for)."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return require_tool(f"/usr/bin/{name}", "dcmtk")

    def require(self, *names: str) -> None:
        """Tools a program the test runs will use (a benchmark script, a target)."""
        for name in names:
            getattr(self, name)

    def get_study(self, archive, study_uid: str, out: Path) -> subprocess.CompletedProcess:
        """getscu: C-GET of one study from `archive` (its `port` and `ae_title`) into `out`, as stored (+B)."""
        command = [self.getscu, "-S", "+B", "-aec", archive.ae_title, "-od", str(out)]
        command += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
        return subprocess.run(
            [*command, "127.0.0.1", str(archive.port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TCP_NODELAY": "1"},
        )


class Dciodvfy:
    """dicom3tools' dciodvfy, the IOD checker."""

    def __init__(self):
        self.path = require_tool("dciodvfy", "dicom3tools")

    def problems(self, path: Path) -> list[str]:
        """The Error and Warning lines dciodvfy prints for a file."""
        result = subprocess.run([self.path, str(path)], capture_output=True, text=True)
        return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("Error", "Warning"))]


def installed_kinds(*kinds: str) -> list:
    """Target kinds as test parameters, each marked with the tool it runs (`-m "not orthanc"` leaves it out)."""
    return [pytest.param(kind, marks=[getattr(pytest.mark, kind)] if kind in INSTALLED_KINDS else []) for kind in kinds]


def syntax_params(cases: list[tuple]) -> list:
    """Test parameters whose last item is a transfer syntax name; DCMTK's syntaxes (jpeg-sv1) marked `dcmtk`."""
    from bench.studies.encode import transfer_syntax

    return [
        pytest.param(*case, marks=[pytest.mark.dcmtk] if transfer_syntax(case[-1]).uses_dcmtk else []) for case in cases
    ]


def require_kind(kind: str) -> None:
    """The program of a local target kind (orthanc, dcmtk) installed; native needs nothing."""
    if kind in INSTALLED_KINDS:
        require_tool(*INSTALLED_KINDS[kind])
