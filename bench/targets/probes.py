"""What every target kind asks of an archive: a C-ECHO answer, its /status page, its environment.

Readiness is always a C-ECHO answer, never a TCP connect: a port can accept connections
long before the DICOM service behind it is able to answer.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common.errors import UserError
from bench.dicom.peer import AssociationFailed, Peer, echo_once

# Names users give (VirtualBox, ESXi) -> what systemd-detect-virt reports inside such a guest.
HYPERVISOR_ALIASES = {"virtualbox": "oracle", "vbox": "oracle", "esxi": "vmware", "hyper-v": "microsoft",
                      "bare-metal": "none", "metal": "none"}


def wait_for_echo(peer: Peer, calling_ae: str, timeout: float, alive=lambda: True) -> float:
    """C-ECHO until the peer answers; return seconds waited or raise UserError."""
    start = time.monotonic()
    last_error = ""
    while time.monotonic() - start < timeout:
        if not alive():
            break
        try:
            echo_once(peer, calling_ae, timeout=min(5.0, timeout))
            return time.monotonic() - start
        except AssociationFailed as exc:
            last_error = str(exc)
            time.sleep(0.2)
    raise UserError(f"target {peer} did not answer C-ECHO within {timeout:g} s: {last_error or 'process exited'}")


def fetch_status(metrics_url: str | None, path: str = "/status", timeout: float = 10.0) -> dict:
    """The archive's HTTP status JSON, or {} when there is none (a status page is optional evidence)."""
    if not metrics_url:
        return {}
    try:
        with urllib.request.urlopen(metrics_url.rstrip("/") + path, timeout=timeout) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def save_server_status(run_dir: Path, metrics_url: str | None, path: str = "/status", timeout: float = 10.0) -> None:
    """The server's own figures at the end of a run, next to the samples: server_status.json."""
    status = fetch_status(metrics_url, path, timeout)
    if status:
        (run_dir / "server_status.json").write_text(json.dumps(status, indent=2))


def archive_facts(status: dict) -> dict:
    """Environment facts the report reads (hypervisor, vcpus, memory_bytes), from the archive's /status."""
    environment = status.get("environment") or {}
    if not environment:
        return {}
    storage = (environment.get("storage") or [{}])[0]
    disk = " ".join(str(storage[k]) for k in ("device", "fs_type") if storage.get(k))
    return {"hypervisor": environment.get("hypervisor"), "vcpus": environment.get("vcpus"),
            "memory_bytes": environment.get("memory_bytes"), "server": status.get("server"),
            **({"disk": disk} if disk else {}), "environment": environment}


def host_hypervisor() -> str:
    """What the load host itself runs on (for archives started natively without a status page)."""
    try:
        found = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        found = ""
    return found or "unknown"


def normalize_hypervisor(name: str) -> str:
    name = name.strip().lower()
    return HYPERVISOR_ALIASES.get(name, name)


def hypervisor_warning(described: dict) -> str | None:
    """A mismatch between the hypervisor asked for and the one the archive detected."""
    asked, found = described.get("requested_hypervisor"), described.get("hypervisor")
    if asked and found and normalize_hypervisor(asked) != normalize_hypervisor(found):
        return (f"target {described.get('label') or described.get('kind')}: asked for hypervisor {asked!r} "
                f"but the archive detected {found!r}")
    return None
