"""The `native` target: the reference archive (server_under_test) as a local process, data in the run folder.

It listens on the host's loopback, except in a run with a network-down fault: the loopback
cannot be taken down for the archive alone, so the archive then runs in a network namespace of
its own, joined to the host by a veth pair (bench.common.netns), and the fault takes the host
end's link down. The load, the harness's Storage SCPs and the status page are then reached
over the veth; the archive's process keeps its budget and dies with the harness as ever.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common.errors import UserError
from bench.common.netns import VethNamespace
from bench.common.paths import remove_tree
from bench.common.processes import (
    ending_with_parent,
    free_local_port,
    interrupt_on_sigterm,
    reap_group,
    run,
    signal_group,
    stop_process,
)
from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import NativeSpec
from bench.targets.probes import archive_facts, fetch_status, hypervisor_labels, save_server_status
from bench.targets.target import Target
from bench.targets.vm.tools import require, require_root
from server_under_test.ready import NotReady, wait_for_ready


def _mb_per_s(size: int, seconds: float) -> float:
    return round(size / 1e6 / max(seconds, 1e-9), 1)


class NativeTarget(Target):
    """The reference archive (server_under_test) as a local process, data in the run folder."""

    kind = "native"
    START_TIMEOUT = 30.0
    STOP_TIMEOUT = 60.0

    spec: NativeSpec

    def __init__(self, spec: NativeSpec, client: ClientSpec, in_namespace: bool = False):
        super().__init__(spec, client)
        self.in_namespace = in_namespace  # a network-down fault: a namespace and veth of its own (made by start)
        self.namespace: VethNamespace | None = None
        self.process: subprocess.Popen | None = None
        self.data: Path | None = None
        self.version = ""
        self.exit_code: int | None = None
        self.config: Path | None = None
        self.metrics_url: str | None = None
        self.log: Path | None = None
        self.ready_file: Path | None = None  # the archive writes it once it listens (its port, its status page)
        self.backups: list[Path] = []  # backup folders a fault run made (removed with the storage)
        self.dicomweb_port: int | None = None  # chosen at the first start, kept over restarts

    def command(self, data: Path, port: int) -> list[str]:
        # `ip netns exec` enters the namespace and execs the archive: the same process (pid, group, budget).
        prefix, host = (self.namespace.exec_prefix, self.namespace.peer_ip) if self.namespace else ([], self.spec.host)
        cmd = [
            *prefix,
            sys.executable,
            "-m",
            "server_under_test",
            "--host",
            host,
            "--port",
            str(port),
            "--aet",
            self.spec.ae_title,
            "--data",
            str(data),
            "--max-pdu",
            str(self.spec.max_pdu),
            "--metrics-port",
            "0",
            "--workers",
            str(self.spec.cpus),
            "--ready-file",
            str(self.ready_file),
        ]
        cmd += ["--config", str(self.config)] if self.config else []
        cmd += self.capacity_options()
        cmd += ["--dicomweb-port", str(self.dicomweb_port)] if self.dicomweb_port else []
        return cmd + ([] if self.spec.fsync else ["--no-fsync"])

    def capacity_options(self) -> list[str]:
        """The archive's bound. at_capacity "stop" runs it with reject: the run stops at the first A700."""
        if not self.spec.capacity:
            return []
        policy = "recycle" if self.spec.at_capacity == "recycle" else "reject"
        return ["--capacity", str(self.spec.capacity), "--at-capacity", policy]

    def _write_config(self, run_dir: Path) -> None:
        """The archive's TOML config: its C-MOVE destinations, and in a namespace of its own the address its status
        page listens on (the namespace's loopback is not the host's). Options come from the command line."""
        tables = [
            f'[destinations."{ae}"]\nhost = "{host}"\nport = {port}\n' for ae, (host, port) in self.destinations.items()
        ]
        if self.namespace:
            tables.append(f'[metrics]\nhost = "{self.namespace.peer_ip}"\n')
        self.config = run_dir / "archive.toml"
        self.config.write_text("\n".join(tables))

    def start(self, run_dir: Path) -> None:
        try:
            self._start(run_dir)
        except BaseException:
            if self.in_namespace:
                self.stop()  # no namespace or veth outlives a start that failed (nor an archive inside it)
            raise

    def _start(self, run_dir: Path) -> None:
        if self.in_namespace:
            self._make_namespace()
        if self.destinations or self.namespace:
            self._write_config(run_dir)
        self.data = run_dir / "archive"
        self.log = run_dir / "server.log"
        self.ready_file = run_dir / "archive-ready.json"
        self.log.write_bytes(b"")
        self.prepare_budget(run_dir)
        if self.spec.dicomweb:
            self.dicomweb_port = free_local_port()  # the archive's DICOMweb side (base URL in its ready file)
        self.ready_seconds = self._launch(self.spec.port or 0)

    def _make_namespace(self) -> None:
        """The archive's namespace and veth pair; its C-MOVE destinations on the host's loopback become the veth's
        host end (the Storage SCPs listen on every address then: bench.load.engine.scp_bind_host)."""
        require_root("a network-down fault on the native target")
        interrupt_on_sigterm()  # a run ended by SIGTERM still reaches stop(), which removes the namespace
        self.namespace = VethNamespace(require("ip"))
        self.namespace.create()  # removes the namespaces of crashed runs first, as the tap network does
        self.namespace.address_peer()
        # The default route through the host end: the archive reaches a destination at any of the host's addresses.
        run(
            self.namespace.inside("route", "add", "default", "via", self.namespace.host_ip),
            30,
            what="ip (archive namespace route)",
        )
        self.destinations = {
            ae: (self.namespace.host_ip if host.startswith("127.") else host, port)
            for ae, (host, port) in self.destinations.items()
        }

    def set_network(self, up: bool) -> None:
        """The veth's host end down (the archive cut off, as by a pulled cable) or up again."""
        if self.namespace is None:
            super().set_network(up)  # refuses: a loopback archive has no link of its own
        self.namespace.set_host_link(up)

    def start_again(self) -> float:
        """After a fault: the same data, port, budget and log (appended to); the seconds until C-ECHO."""
        self.exit_code = None
        return self._launch(self.peer.port)

    def _launch(self, port: int) -> float:
        """Start the archive on `port`; the seconds from launch to its first C-ECHO answer."""
        started = time.monotonic()
        with self.log.open("ab") as log:
            # The archive stops (and its workers with it) whatever ends the harness. Its own
            # process group, so that a fault's signal reaches the supervisor and every worker.
            self.process = subprocess.Popen(
                self.command(self.data, port),
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=ending_with_parent(self.budget.enter),
            )
        self.record_server_pid(self.log.parent)
        try:
            ready = wait_for_ready(self.ready_file, self.process, self.START_TIMEOUT)
        except NotReady as exc:
            self.exit_code = stop_process(self.process, self.STOP_TIMEOUT, group=True)  # stop() releases the rest
            tail = self.log.read_text(errors="replace").strip().splitlines()
            last = f": {tail[-1]}" if tail else ""
            raise UserError(f"native archive did not start ({exc}){last} (see {self.log})") from None
        self.version = ready.version
        # dicomweb_url: a ready file field of the archive's DICOMweb side; an archive without it has none
        dicomweb_url = ready.dicomweb_url if self.dicomweb_port else None
        if self.dicomweb_port and not dicomweb_url:
            self.exit_code = stop_process(self.process, self.STOP_TIMEOUT, group=True)
            raise UserError("the native archive started without a DICOMweb side (its ready file has no dicomweb_url)")
        self.peer = Peer(ready.host, ready.port, self.spec.ae_title, dicomweb_url)
        self.metrics_url = ready.metrics_url
        remaining = max(self.START_TIMEOUT - (time.monotonic() - started), 1.0)
        wait_for_echo(self.peer, self.client.calling_ae, remaining, alive=lambda: self.process.poll() is None)
        seconds = time.monotonic() - started
        self.status = fetch_status(self.metrics_url)
        return seconds

    def server_pid(self) -> int | None:
        return self.process.pid if self.process else None

    def signal_archive(self, signum: int) -> None:
        signal_group(self.process.pid, signum)

    def wait_for_exit(self, timeout: float) -> int | None:
        self.exit_code = reap_group(self.process, timeout)  # no worker may outlive its supervisor and hold the port
        return self.exit_code

    def _backup_tool(self, *args: str) -> tuple[float, str]:
        """Run the archive's own backup/restore command (a process of its own: copying gigabytes in the
        load's process would stall every user for as long); the seconds it took and its summary line."""
        config = ["--config", str(self.config)] if self.config else []
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "server_under_test", *args, "--data", str(self.data), *config],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise UserError(
                f"archive {args[0]} failed ({done.returncode}): "
                f"{(done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]}"
            )
        return time.monotonic() - started, done.stdout.strip()

    def back_up(self, name: str) -> dict:
        folder = self.data.parent / name
        self.backups.append(folder)
        seconds, line = self._backup_tool("backup", "--out", str(folder))
        manifest = json.loads((folder / "manifest.json").read_text())
        return {
            "folder": str(folder),
            "seconds": round(seconds, 3),
            "instances": manifest["instances"],
            "bytes": manifest["bytes"],
            "mb_per_s": _mb_per_s(manifest["bytes"], seconds),
            "snapshot_time": manifest["snapshot_time"],
            "summary": line,
        }

    def restore_data(self, backup: dict) -> dict:
        remove_tree(self.data)  # the disk is gone: nothing of the old data folder survives
        seconds, line = self._backup_tool("restore", backup["folder"])
        return {
            "seconds": round(seconds, 3),
            "instances": backup["instances"],
            "bytes": backup["bytes"],
            "mb_per_s": _mb_per_s(backup["bytes"], seconds),
            "summary": line,
        }

    def collect_metrics(self, run_dir: Path) -> None:
        if self.process is not None and self.process.poll() is None:
            save_server_status(run_dir, self.metrics_url)

    def stop(self) -> None:
        """SIGTERM (the archive finishes in-flight stores), then SIGKILL if it hangs; then its namespace, if any."""
        try:
            self._stop_archive()
        finally:
            if self.namespace is not None:
                self.namespace.remove()  # both veth ends go with it

    def _stop_archive(self) -> None:
        if self.process is None or self.exit_code is not None:
            self.release_budget()  # a start that failed before the archive existed leaves its cgroup too
            return
        self.exit_code = stop_process(self.process, self.STOP_TIMEOUT)
        self.release_budget()
        if self.data and not self.spec.keep_data:
            # The index stays with the run as evidence; the (large) image files go, and backups' copies.
            remove_tree(self.data / "storage")
            for tier in (t for folder in self.backups for t in folder.glob("tier-*")):
                remove_tree(tier)

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "label": self.label,
            **archive_facts(self.status),
            **hypervisor_labels(archive_facts(self.status).get("hypervisor"), None, "the archive's /status"),
            **self._network_record(),
            "host": self.peer.host if self.peer else self.spec.host,
            "port": self.peer.port if self.peer else self.spec.port,
            "ae_title": self.spec.ae_title,
            "dicomweb_url": self.peer.dicomweb_url if self.peer else None,
            "server": f"server_under_test {self.version}",
            "fsync": self.spec.fsync,
            "max_pdu": self.spec.max_pdu,
            "budget": self.budget_record(),
            "capacity_bytes": self.spec.capacity,
            "at_capacity": self.spec.at_capacity,
            "data": str(self.data) if self.data else None,
            "storage_kept": self.spec.keep_data,
            "destinations": {ae: f"{host}:{port}" for ae, (host, port) in self.destinations.items()},
            "ready_seconds": self.ready_seconds,
            "exit_code": self.exit_code,
        }

    def _network_record(self) -> dict:
        """run.json's target.network: the path the load took differs from loopback in a network-down run."""
        if not self.in_namespace:
            return {"network": "loopback"}
        return {
            "network": "veth into a namespace of its own (for network-down faults)",
            "namespace": self.namespace.describe() if self.namespace else None,
        }
