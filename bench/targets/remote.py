"""The `remote` target: any archive reachable over the network (an ESXi or VirtualBox VM, a PACS); nothing started."""

from __future__ import annotations

from pathlib import Path

from bench.dicom.peer import Peer
from bench.load.scenario import ClientSpec, TargetSpec
from bench.targets.probes import archive_facts, fetch_status, save_server_status, wait_for_echo


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
