"""The archive's HTTP side: /metrics (Prometheus text) and /status (JSON), served by the supervisor process.

Both read the index (usage per tier, counts, recycled totals) on every request, so they
agree with each other and survive a worker's restart; `/metrics?only=host` is what a
per-second sampler reads, without index queries. What only the running supervisor knows
(its port, its workers, the migrator's totals) comes from the `ArchiveState` it passes in.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from server_under_test import __version__
from server_under_test.config import ArchiveConfig
from server_under_test.storage.index import connect, recycled_totals

if TYPE_CHECKING:
    from server_under_test.storage.files import TierSet
    from server_under_test.storage.migration import Migrator


class ArchiveState(Protocol):
    """What the supervisor tells the pages about the running archive."""

    config: ArchiveConfig
    started: float
    index_path: Path
    tiers: TierSet | None
    migrator: Migrator | None

    @property
    def port(self) -> int: ...

    @property
    def worker_pids(self) -> list[int]: ...


class StatusPages:
    """The HTTP server for /metrics and /status, on its own thread until shutdown()."""

    def __init__(self, archive: ArchiveState, host: str, port: int):
        self.archive = archive
        self._environment: dict | None = None
        handler = type("Handler", (_PageHandler,), {"pages": self})
        self.http = ThreadingHTTPServer((host, port), handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="http", daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self.http.server_address[1]

    def shutdown(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def metrics(self, only_host: bool) -> bytes:
        from server_under_test.metrics import HostCpuCollector, render

        if only_host:
            return render(HostCpuCollector(), with_processes=False)
        return render(TierCollector(self.archive), HostCpuCollector())

    def environment(self) -> dict:
        if self._environment is None:
            from server_under_test.environment import describe

            self._environment = describe([t.path for t in self.archive.config.storage_tiers])
        return self._environment

    def status(self) -> dict:
        archive, c = self.archive, self.archive.config
        figures = index_figures(archive.index_path)
        return {
            "server": f"server_under_test {__version__}",
            "ae_title": c.ae_title,
            "host": c.host,
            "port": archive.port,
            "uptime_seconds": round(time.time() - archive.started, 1),
            "workers": archive.worker_pids,
            "settings": {
                "fsync": c.fsync,
                "index_synchronous": "FULL" if c.fsync else "OFF",
                "direct_io": c.direct_io,
                "duplicates": c.duplicates,
                "max_associations": c.max_associations,
                "max_pdu": c.max_pdu,
                "artim_timeout": c.artim_timeout,
                "allowed_calling_aets": list(c.allowed_calling_aets),
                "check_called_aet": c.check_called_aet,
                "destinations": sorted(c.destinations),
            },
            "index": {
                "path": str(archive.index_path),
                "patients": figures["patients"],
                "studies": figures["studies"],
                "instances": figures["instances"],
            },
            "tiers": self._tiers(figures),
            "capacity": {
                "capacity_bytes": c.capacity,
                "at_capacity": c.at_capacity,
                "used_bytes": figures["used_bytes"],
                "recycled_studies": figures["recycled"]["studies"],
                "recycled_instances": figures["recycled"]["instances"],
                "recycled_bytes": figures["recycled"]["bytes"],
            },
            "migration": {
                "studies_moved": archive.migrator.moved_studies if archive.migrator else 0,
                "bytes_moved": archive.migrator.moved_bytes if archive.migrator else 0,
            },
            "environment": self.environment(),
        }

    def _tiers(self, figures: dict) -> list[dict]:
        stores = self.archive.tiers.stores if self.archive.tiers else None
        tiers = []
        for n, t in enumerate(self.archive.config.storage_tiers):
            used, files = figures["usage"].get(n, (0, 0))
            tiers.append(
                {
                    "name": t.name,
                    "path": str(t.path),
                    "capacity_bytes": t.capacity,
                    "high_watermark": t.high_watermark,
                    "low_watermark": t.low_watermark,
                    "used_bytes": used,
                    "files": files,
                    # in effect: O_DIRECT asked for and accepted by this tier's file system
                    "direct_io": bool(stores and stores[n].direct_io),
                }
            )
        return tiers


class _PageHandler(BaseHTTPRequestHandler):
    pages: StatusPages

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0]
        if path == "/metrics":
            body, kind = self.pages.metrics(self.path.endswith("?only=host")), "text/plain; version=0.0.4"
        elif path == "/status":
            body, kind = json.dumps(self.pages.status(), indent=2).encode(), "application/json"
        else:
            self.send_error(404, "try /metrics or /status")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def index_figures(index_path: Path) -> dict:
    """Usage per tier, patient, study and instance counts, recycled totals: from the index, now."""
    db = connect(index_path, "OFF")
    try:
        usage = {t: (b, f) for t, b, f in db.execute("SELECT tier, bytes, files FROM tier_usage")}
        counts = db.execute(
            "SELECT (SELECT COUNT(*) FROM patient WHERE num_instances > 0), "
            "(SELECT COUNT(*) FROM study WHERE num_instances > 0), "
            "(SELECT COALESCE(SUM(files), 0) FROM tier_usage)"
        ).fetchone()
        recycled = recycled_totals(db)
    finally:
        db.close()
    return {
        "usage": usage,
        "patients": counts[0],
        "studies": counts[1],
        "instances": counts[2],
        "used_bytes": sum(b for b, _ in usage.values()),
        "recycled": recycled,
    }


class TierCollector:
    """Prometheus samples of the index's figures: bytes per tier, instances, capacity, recycled totals."""

    def __init__(self, archive: ArchiveState):
        self.archive = archive

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        config = self.archive.config
        figures = index_figures(self.archive.index_path)
        used = GaugeMetricFamily("pacsbench_archive_tier_used_bytes", "Bytes stored per tier", labels=["tier"])
        capacity = GaugeMetricFamily(
            "pacsbench_archive_tier_capacity_bytes", "Configured capacity (0 = none)", labels=["tier"]
        )
        for n, tier in enumerate(config.storage_tiers):
            used.add_metric([tier.name], figures["usage"].get(n, (0, 0))[0])
            capacity.add_metric([tier.name], tier.capacity)
        yield used
        yield capacity
        yield GaugeMetricFamily("pacsbench_archive_instances", "Instances in the index", value=figures["instances"])
        yield GaugeMetricFamily(
            "pacsbench_archive_used_bytes", "Bytes stored on all tiers", value=figures["used_bytes"]
        )
        yield GaugeMetricFamily(
            "pacsbench_archive_capacity_bytes", "The archive's capacity (0 = none)", value=config.capacity
        )
        # From the index, so they agree with /status and survive a worker's restart.
        for what in ("studies", "instances", "bytes"):
            yield CounterMetricFamily(
                f"pacsbench_archive_recycled_{what}",
                f"{what.capitalize()} deleted to make room at capacity",
                value=figures["recycled"][what],
            )
