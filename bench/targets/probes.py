"""What every target kind asks of an archive besides a C-ECHO answer (bench.dicom.readiness): its /status
page, the environment it reports, whether that is the hypervisor the user asked for, and its DICOMweb side.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common.errors import UserError

# Names users give (VirtualBox, ESXi) -> what systemd-detect-virt reports inside such a guest.
HYPERVISOR_ALIASES = {
    "virtualbox": "oracle",
    "vbox": "oracle",
    "esxi": "vmware",
    "hyper-v": "microsoft",
    "bare-metal": "none",
    "metal": "none",
}


def fetch_status(metrics_url: str | None, path: str = "/status", timeout: float = 10.0) -> dict:
    """The archive's HTTP status JSON, or {} when there is none (a status page is optional evidence)."""
    if not metrics_url:
        return {}
    try:
        with urllib.request.urlopen(metrics_url.rstrip("/") + path, timeout=timeout) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def wait_for_status(metrics_url: str | None, timeout: float) -> dict:
    """A VM's archive answers C-ECHO a little before its HTTP status page is up: poll it, bounded; {} without one."""
    deadline = time.monotonic() + timeout
    while metrics_url and time.monotonic() < deadline:
        if status := fetch_status(metrics_url, timeout=max(1.0, deadline - time.monotonic())):
            return status
        time.sleep(0.5)
    return {}


def dicomweb_answers(url: str, timeout: float) -> bool:
    """Whether the DICOMweb side at base `url` answers a QIDO-RS (any HTTP answer: 200, 204, even an error)."""
    try:
        with urllib.request.urlopen(f"{url}/studies?limit=1", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered: what it thinks of the request is the users' business
    except (OSError, urllib.error.URLError):
        return False


def wait_for_dicomweb(url: str | None, timeout: float) -> None:
    """Check that an archive asked to serve DICOMweb (at base `url`; None: not asked) does, polling a bounded time;
    a one-line UserError when it never answers. Each archive worker starts its DICOMweb server before it takes
    associations, so after a C-ECHO answer this is one request, unless the archive has no DICOMweb."""
    deadline = time.monotonic() + timeout
    while url and not dicomweb_answers(url, timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            raise UserError(f"the archive's DICOMweb side at {url} did not answer within {timeout:g} s")
        time.sleep(0.5)


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
    if disk and storage.get("fs_journal") is False:
        disk += " (no journal)"
    return {
        "hypervisor": environment.get("hypervisor"),
        "container": environment.get("container"),
        "vcpus": environment.get("vcpus"),
        "memory_bytes": environment.get("memory_bytes"),
        "server": status.get("server"),
        **({"disk": disk} if disk else {}),
        "environment": environment,
    }


def hypervisor_labels(detected: str | None, declared: str | None, where: str) -> dict:
    """run.json's hypervisor labels: what was detected (else "unknown"), what the scenario declared, and how.

    A declared name is never recorded as detected: without a detection the label is "unknown"."""
    return {
        "hypervisor": detected or "unknown",
        "declared_hypervisor": declared,
        "hypervisor_source": f"detected ({where})" if detected else f"not detected ({where} gave no answer)",
    }


def normalize_hypervisor(name: str) -> str:
    name = name.strip().lower()
    return HYPERVISOR_ALIASES.get(name, name)


def hypervisor_warning(described: dict) -> str | None:
    """A mismatch between the hypervisor asked for and the one the archive detected."""
    asked, found = described.get("requested_hypervisor"), described.get("hypervisor")
    if asked and found and found != "unknown" and normalize_hypervisor(asked) != normalize_hypervisor(found):
        return (
            f"target {described.get('label') or described.get('kind')}: asked for hypervisor {asked!r} "
            f"but the archive detected {found!r}"
        )
    return None
