"""Host tools the targets call (QEMU, image building, installed archives): found up front, run with a time limit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.common.errors import UserError

DEBIAN_PACKAGE = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "unshare": "util-linux",
    "ip": "iproute2",
    "Orthanc": "orthanc",
    "dcmqrscp": "dcmtk",
}


def require(tool: str) -> str:
    """The tool's full path, or a UserError naming the Debian package that has it."""
    # sbin is not on every user's PATH (debootstrap, mkfs.ext4 live there).
    path = shutil.which(tool) or shutil.which(tool, path="/usr/local/sbin:/usr/sbin:/sbin")
    if not path:
        package = DEBIAN_PACKAGE.get(tool, tool)
        raise UserError(f"{tool} not found: install it (Debian: apt-get install {package})")
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UserError(f"{what} needs root (debootstrap, chroot, network namespaces)")


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
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                                      **kwargs)
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
