"""The `remote` target: any archive reachable over the network (an ESXi or VirtualBox VM, a PACS); nothing started."""

from __future__ import annotations

from pathlib import Path

from bench.dicom.peer import Peer
from bench.dicom.readiness import wait_for_echo
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import RemoteSpec
from bench.targets.probes import archive_facts, fetch_status, hypervisor_labels, save_server_status
from bench.targets.target import Target


class RemoteTarget(Target):
    """Any archive reachable over the network; pacsbench starts nothing."""

    kind = "remote"

    spec: RemoteSpec

    def __init__(self, spec: RemoteSpec, client: ClientSpec):
        super().__init__(spec, client)
        self.peer = Peer(spec.host, int(spec.port), spec.ae_title, spec.dicomweb_url)

    def start(self, run_dir: Path) -> None:
        self.ready_seconds = wait_for_echo(self.peer, self.client.calling_ae, timeout=self.client.timeout)
        self.status = fetch_status(self.spec.metrics_url)

    def collect_metrics(self, run_dir: Path) -> None:
        save_server_status(run_dir, self.spec.metrics_url)

    def guest_metrics_url(self) -> str | None:
        return self.spec.metrics_url

    def stop(self) -> None:
        pass  # nothing was started

    def describe(self) -> dict:
        facts = archive_facts(self.status)
        return {
            "kind": self.kind,
            "label": self.label,
            "host": self.peer.host,
            "port": self.peer.port,
            "ae_title": self.peer.ae_title,
            "metrics_url": self.spec.metrics_url,
            "dicomweb_url": self.spec.dicomweb_url,
            "requested_hypervisor": self.spec.hypervisor,
            **facts,
            **hypervisor_labels(facts.get("hypervisor"), self.spec.hypervisor, "metrics_url /status"),
            "ready_seconds": self.ready_seconds,
        }
