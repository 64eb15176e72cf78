"""Targets: the archive under test. Start it (or not), wait until it answers, describe, stop.

Readiness is always a C-ECHO answer, never a TCP connect: a port can accept connections
long before the DICOM service behind it is able to answer.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.dimse_client import AssociationFailed, Peer, echo_once
from bench.errors import UserError
from bench.scenario import ClientSpec, TargetSpec

READY_LINE = re.compile(r"server_under_test (?P<version>\S+) listening on (?P<host>\S+):(?P<port>\d+) ")
METRICS_URL = re.compile(r" metrics (?P<url>http://\S+)")
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


class RemoteTarget:
    """Any archive reachable over the network; pacsbench starts nothing."""

    kind = "remote"

    def __init__(self, spec: TargetSpec, client: ClientSpec):
        self.spec = spec
        self.client = client
        self.peer = Peer(spec.host, int(spec.port), spec.ae_title)
        self.ready_seconds: float | None = None
        self.status: dict = {}

    def start(self, run_dir: Path) -> None:
        self.ready_seconds = wait_for_echo(self.peer, self.client.calling_ae, timeout=self.client.timeout)
        self.status = fetch_status(self.spec.metrics_url)

    def collect_metrics(self, run_dir: Path) -> None:
        save_server_status(run_dir, self.spec.metrics_url)

    def stop(self) -> None:
        pass

    def describe(self) -> dict:
        facts = archive_facts(self.status)
        return {"kind": self.kind, "label": self.spec.label or self.kind, "host": self.peer.host,
                "port": self.peer.port, "ae_title": self.peer.ae_title, "metrics_url": self.spec.metrics_url,
                "requested_hypervisor": self.spec.hypervisor,
                **facts, "hypervisor": facts.get("hypervisor") or self.spec.hypervisor,
                "hypervisor_source": "detected (/status)" if facts else "declared in the scenario",
                "ready_seconds": self.ready_seconds}


class NativeTarget:
    """The reference archive (server_under_test) as a local process, data in the run folder."""

    kind = "native"
    START_TIMEOUT = 30.0
    STOP_TIMEOUT = 60.0

    def __init__(self, spec: TargetSpec, client: ClientSpec):
        self.spec = spec
        self.client = client
        self.process: subprocess.Popen | None = None
        self.peer: Peer | None = None
        self.data: Path | None = None
        self.version = ""
        self.ready_seconds: float | None = None
        self.exit_code: int | None = None
        self.destinations: dict[str, tuple[str, int]] = {}  # C-MOVE destinations: AE title -> (host, port)
        self.config: Path | None = None
        self.metrics_url: str | None = None
        self.status: dict = {}

    def command(self, data: Path) -> list[str]:
        cmd = [sys.executable, "-m", "server_under_test", "--host", self.spec.host, "--port", str(self.spec.port or 0),
               "--aet", self.spec.ae_title, "--data", str(data), "--max-pdu", str(self.spec.max_pdu),
               "--metrics-port", "0"]
        cmd += ["--config", str(self.config)] if self.config else []
        return cmd + ([] if self.spec.fsync else ["--no-fsync"])

    def _write_config(self, run_dir: Path) -> None:
        """The archive's TOML config holding only its C-MOVE destinations (options come from the command line)."""
        tables = [f'[destinations."{ae}"]\nhost = "{host}"\nport = {port}\n'
                  for ae, (host, port) in self.destinations.items()]
        self.config = run_dir / "archive.toml"
        self.config.write_text("\n".join(tables))

    def start(self, run_dir: Path) -> None:
        if self.destinations:
            self._write_config(run_dir)
        self.data = run_dir / "archive"
        log = (run_dir / "server.log").open("wb")
        started = time.monotonic()
        self.process = subprocess.Popen(self.command(self.data), stdout=subprocess.PIPE, stderr=log)
        line = self._read_ready_line()
        match = READY_LINE.match(line)
        if not match:
            self.stop()
            tail = (run_dir / "server.log").read_text(errors="replace").strip().splitlines()
            reason = tail[-1] if tail else line.strip() or "no output"
            raise UserError(f"native archive did not start: {reason} (see {run_dir / 'server.log'})")
        self.version = match["version"]
        self.peer = Peer(match["host"], int(match["port"]), self.spec.ae_title)
        self.metrics_url = (METRICS_URL.search(line) or {"url": None})["url"]
        remaining = max(self.START_TIMEOUT - (time.monotonic() - started), 1.0)
        wait_for_echo(self.peer, self.client.calling_ae, remaining, alive=lambda: self.process.poll() is None)
        self.ready_seconds = time.monotonic() - started
        self.status = fetch_status(self.metrics_url)

    def collect_metrics(self, run_dir: Path) -> None:
        if self.process is not None and self.process.poll() is None:
            save_server_status(run_dir, self.metrics_url)

    def _read_ready_line(self) -> str:
        ready, _, _ = select.select([self.process.stdout], [], [], self.START_TIMEOUT)
        if not ready:
            return ""
        return self.process.stdout.readline().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (the archive finishes in-flight stores), then SIGKILL if it hangs."""
        if self.process is None or self.exit_code is not None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.exit_code = self.process.returncode
        if self.process.stdout:
            self.process.stdout.close()
        if self.data and not self.spec.keep_data:
            # The index stays with the run as evidence; the (large) image files go.
            shutil.rmtree(self.data / "storage", ignore_errors=True)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "label": self.spec.label or self.kind,
            **archive_facts(self.status),
            "network": "loopback",
            "host": self.peer.host if self.peer else self.spec.host,
            "port": self.peer.port if self.peer else self.spec.port,
            "ae_title": self.spec.ae_title,
            "server": f"server_under_test {self.version}",
            "fsync": self.spec.fsync,
            "max_pdu": self.spec.max_pdu,
            "data": str(self.data) if self.data else None,
            "storage_kept": self.spec.keep_data,
            "destinations": {ae: f"{host}:{port}" for ae, (host, port) in self.destinations.items()},
            "ready_seconds": self.ready_seconds,
            "exit_code": self.exit_code,
        }


def make_target(spec: TargetSpec, client: ClientSpec):
    """native, kvm, tcg, orthanc, dcmtk or remote; each has start, stop, describe and collect_metrics."""
    if spec.kind == "native":
        return NativeTarget(spec, client)
    if spec.kind in ("kvm", "tcg"):
        from bench.vm.target import GuestTarget

        return GuestTarget(spec, client)
    if spec.kind in ("orthanc", "dcmtk"):
        from bench.installed_archives import DcmqrscpTarget, OrthancTarget

        return (OrthancTarget if spec.kind == "orthanc" else DcmqrscpTarget)(spec, client)
    return RemoteTarget(spec, client)
