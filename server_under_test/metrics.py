"""Prometheus metrics shared by the worker processes (prometheus_client multiprocess mode).

The supervisor points PROMETHEUS_MULTIPROC_DIR at a fresh folder before any worker starts;
each process then writes its counters to memory-mapped files there, and the supervisor's
/metrics endpoint adds them up. Without that variable (tests, one process) they are plain
in-process metrics.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


def prepare_multiprocess_dir(folder: Path) -> None:
    """Must run before prometheus_client is imported anywhere in this process."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(folder)


class Metrics:
    """Counters for associations and DIMSE operations, one instance per process."""

    _instance: "Metrics | None" = None

    def __new__(cls):
        # prometheus_client registers metric names globally: create them once per process.
        if cls._instance is None:
            cls._instance = super().__new__(cls)
            cls._instance._create()
        return cls._instance

    def _create(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.associations = Counter("pacsbench_archive_associations", "Associations by outcome", ["result"])
        self.active = Gauge(
            "pacsbench_archive_associations_active", "Associations open now", multiprocess_mode="livesum"
        )
        self.operations = Counter(
            "pacsbench_archive_operations", "DIMSE operations by status class", ["operation", "status"]
        )
        self.latency = Histogram(
            "pacsbench_archive_operation_seconds", "DIMSE operation latency", ["operation"], buckets=LATENCY_BUCKETS
        )
        self.bytes_received = Counter("pacsbench_archive_received_bytes", "Dataset bytes received", ["operation"])
        self.migrated_studies = Counter(
            "pacsbench_archive_migrated_studies", "Studies moved down a tier", ["from_tier", "to_tier"]
        )
        self.migrated_bytes = Counter(
            "pacsbench_archive_migrated_bytes", "Bytes moved down a tier", ["from_tier", "to_tier"]
        )

    def association_started(self, result: str) -> None:
        self.associations.labels(result).inc()
        if result == "accepted":
            self.active.inc()

    def association_ended(self) -> None:
        self.active.dec()

    def operation(self, operation: str, outcome: str, seconds: float, received_bytes: int) -> None:
        """`outcome`: the final status's class (upper_layer.status.status_class decides it)."""
        self.operations.labels(operation, outcome).inc()
        self.latency.labels(operation).observe(seconds)
        if received_bytes:
            self.bytes_received.labels(operation).inc(received_bytes)


def render(*extra_collectors, with_processes: bool = True) -> bytes:
    """Prometheus text for all processes (multiprocess mode) or this one, plus `extra_collectors`;
    without `with_processes` only the extra collectors (a cheap page to scrape every second)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    if not with_processes:
        registry = CollectorRegistry()
    elif os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    for collector in extra_collectors:
        registry.register(collector)
    try:
        return generate_latest(registry)
    finally:
        for collector in extra_collectors:
            registry.unregister(collector)


# /proc/stat's first line, in its order; steal is time a hypervisor gave this machine's vCPUs to others.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_seconds(stat_path: str = "/proc/stat") -> dict[str, float]:
    """Seconds all CPUs of this machine spent in each mode since boot ({} where there is no /proc/stat).

    Read here and not with psutil: the archive stays installable alone, in a guest without it."""
    try:
        with open(stat_path) as stat:
            fields = stat.readline().split()
    except OSError:
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    return {mode: int(value) / ticks for mode, value in zip(CPU_MODES, fields[1:])}


class HostCpuCollector:
    """The machine's own CPU time by mode (node_exporter's node_cpu_seconds_total, summed over CPUs), and
    its CPU count: inside a guest, the guest's view of its vCPUs, steal included."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        seconds = CounterMetricFamily("pacsbench_host_cpu_seconds", "CPU time of all CPUs by mode", labels=["mode"])
        for mode, value in cpu_seconds().items():
            seconds.add_metric([mode], value)
        yield seconds
        yield GaugeMetricFamily("pacsbench_host_cpus", "CPUs this machine has", value=os.cpu_count() or 0)


def process_exited(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
