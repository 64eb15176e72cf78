"""The hypervisor's view of the VM: ESXi's PerformanceManager at its real-time interval (20 s), as the
hypervisor_* columns of server_metrics.csv (bench.results.server_metrics).

The resource sampler (bench.runs.resources) runs this in its own process: a thread asks QueryPerf
for the newest real-time sample of the VM, once at the start and then once per interval just
after a new one is due, and hands each new sample to the next row. CPU ready and co-stop are
summations (milliseconds of the interval, summed over the vCPUs): as a percentage per vCPU,
ms / (interval s x 1000) x 100 / vCPUs, as VMware's KB 2002181 ("Converting between CPU
summation and CPU % ready values") does. govmomi's simulator answers with synthetic values.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from bench.scenario.targets import EsxiSpec
from bench.targets.esxi.connection import Session, connect, vim

REALTIME_INTERVAL = 20  # seconds: ESXi's real-time statistics interval
DUE_AFTER = 2.0  # seconds after a sample's interval ends before the next one is asked for
NO_SAMPLE_YET = 5.0  # seconds between asks while the server has given none

# counter (group.name.rollup) -> (instance: "" = the VM's aggregate, "*" = each instance)
COUNTERS = {
    "cpu.ready.summation": "",
    "cpu.costop.summation": "",
    "cpu.usage.average": "",
    "mem.vmmemctl.average": "",
    "mem.swapped.average": "",
    "virtualDisk.totalReadLatency.average": "*",
    "virtualDisk.totalWriteLatency.average": "*",
    "net.received.average": "",
    "net.transmitted.average": "",
}


def counter_ids(session: Session) -> dict[str, int]:
    """PerformanceManager's counter keys of COUNTERS (those the server has)."""
    ids = {}
    for counter in session.content.perfManager.perfCounter:
        name = f"{counter.groupInfo.key}.{counter.nameInfo.key}.{counter.rollupType}"
        if name in COUNTERS:
            ids[name] = counter.key
    return ids


def columns(values: dict[str, list[float]], interval: int, vcpus: int) -> dict[str, float]:
    """The hypervisor_* columns from one sample's values per counter (several for per-instance counters)."""

    def first(name: str) -> float | None:
        found = values.get(name)
        return found[0] if found else None

    def slowest(name: str) -> float | None:
        found = values.get(name)
        return max(found) if found else None

    def per_vcpu(ms: float | None) -> float | None:
        return None if ms is None else round(ms / (interval * 1000) * 100 / max(vcpus, 1), 2)

    usage = first("cpu.usage.average")  # hundredths of a percent
    figures = {
        "hypervisor_cpu_ready_percent": per_vcpu(first("cpu.ready.summation")),
        "hypervisor_cpu_costop_percent": per_vcpu(first("cpu.costop.summation")),
        "hypervisor_cpu_usage_percent": None if usage is None else round(usage / 100, 2),
        "hypervisor_memory_ballooned_bytes": _kb(first("mem.vmmemctl.average")),
        "hypervisor_memory_swapped_bytes": _kb(first("mem.swapped.average")),
        "hypervisor_disk_read_latency_ms": slowest("virtualDisk.totalReadLatency.average"),
        "hypervisor_disk_write_latency_ms": slowest("virtualDisk.totalWriteLatency.average"),
        "hypervisor_net_received_bytes_per_s": _kb(first("net.received.average")),
        "hypervisor_net_transmitted_bytes_per_s": _kb(first("net.transmitted.average")),
    }
    return {key: value for key, value in figures.items() if value is not None}


def _kb(value: float | None) -> int | None:
    return None if value is None else int(value * 1024)


@dataclass
class EsxiPerf:
    """The newest real-time sample of one VM, polled by a thread; `take` hands each new one over once."""

    spec: EsxiSpec
    vm_moref: str
    vcpus: int
    interval: int = REALTIME_INTERVAL
    session: Session | None = None
    latest: dict = field(default_factory=dict)
    last_time: float = 0.0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="esxi-perf", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        if self.session:
            self.session.close()

    def take(self) -> dict:
        """The sample that arrived since the last call ({} if none)."""
        with self.lock:
            taken, self.latest = self.latest, {}
        return taken

    def _run(self) -> None:
        try:
            self.session = connect(self.spec)
            vm = vim().VirtualMachine(self.vm_moref, self.session.si._stub)
            ids = counter_ids(self.session)
        except Exception:  # noqa: BLE001 (no hypervisor columns then; run.json says the rows had none)
            self.errors += 1
            return
        while not self.stopping.is_set():
            try:
                sample = self.query(vm, ids)
            except Exception:  # noqa: BLE001 (a missed sample; the next poll tries again)
                self.errors += 1
                sample = {}
            if sample:
                with self.lock:
                    self.latest = sample
            # The next sample is due an interval after the last one's end; none yet: ask again soon.
            due = (self.last_time + self.interval + DUE_AFTER - time.time()) if self.last_time else NO_SAMPLE_YET
            self.stopping.wait(min(max(due, 1.0), self.interval))

    def query(self, vm, ids: dict[str, int]) -> dict:
        """The newest sample after the last one taken, as hypervisor_* columns; {} when there is none yet."""
        v = vim()
        spec = v.PerformanceManager.QuerySpec(
            entity=vm,
            intervalId=self.interval,
            maxSample=1,
            metricId=[v.PerformanceManager.MetricId(counterId=ids[n], instance=COUNTERS[n]) for n in ids],
        )
        result = self.session.content.perfManager.QueryPerf([spec])
        if not result or not result[0].sampleInfo:
            return {}
        info = result[0].sampleInfo[-1]
        stamp = info.timestamp.timestamp()
        if stamp <= self.last_time:
            return {}
        names = {key: name for name, key in ids.items()}
        values: dict[str, list[float]] = {}
        for series in result[0].value:
            name = names.get(series.id.counterId)
            if name and series.value and series.value[-1] >= 0:  # -1: no value for this sample
                values.setdefault(name, []).append(float(series.value[-1]))
        self.last_time = stamp
        return {
            "hypervisor_sample_time": round(stamp, 3),
            "hypervisor_interval_seconds": info.interval,
            **columns(values, info.interval or self.interval, self.vcpus),
        }


def hypervisor_reader(source: dict) -> EsxiPerf:
    """The reader the sampler process runs, from the target's hypervisor_source() (JSON: no secret in it)."""
    return EsxiPerf(EsxiSpec.model_validate(source["spec"]), source["vm"], int(source["vcpus"]))
