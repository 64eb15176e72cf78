"""Per-second resource series of a run -> server_metrics.csv: the archive's processes, the data disk, the network,
the host and the load processes, sampled with psutil.

The sampler is a child process of its own (`python -m bench.runs.resources`), started once the
target answers and stopped with the load: under gevent the run's threads are greenlets, and a
sampler inside the load process would skip seconds exactly when that process is busiest (the
case the series must show). Each row is written and flushed as it is taken.

Columns (rates over the second before `time`; CPU in percent of one core unless it says budget):
    time                         Unix seconds
    server_cpu_percent           the archive's process tree (a guest: its QEMU process), 100 = one core
    server_cpu_budget_percent    the same as a share of its budget (100 = all its CPUs busy)
    server_rss_bytes, server_threads, server_open_fds, server_processes
    server_cpus_busy_percent     how busy the CPUs the archive may run on were, whoever used them (100 = all busy)
    disk_read_bytes_per_s, disk_write_bytes_per_s, disk_busy_percent   the device holding the run folder
    net_sent_bytes_per_s, net_recv_bytes_per_s, net_link_bytes_per_s  the interface towards the target
                                                                       (link 0: no known speed, e.g. loopback)
    host_cpu_percent, host_iowait_percent, host_steal_percent          all CPUs of the host, 100 = all busy
    load_cpu_percent             the load processes together (this run's process and its local workers)
    load_busiest_cpu_percent     the busiest single load process (near 100: the load generator is the limit)
    guest_cpu_percent, guest_steal_percent, guest_iowait_percent, guest_cpus
                                 a guest's (or a remote archive's) own view of its CPUs, from its /metrics
                                 (pacsbench_host_cpu_seconds by mode) scraped each second; 100 = all its CPUs;
                                 empty when there is no metrics URL or it does not give those figures
    hypervisor_*                 the hypervisor's own view of the archive's VM (bench.results.server_metrics lists
                                 them): an esxi target's from ESXi's PerformanceManager (bench.targets.esxi.perf),
                                 filled in the row of the second each 20 s sample arrived; a virtualbox target's
                                 from `VBoxManage metrics query` of the VM process, each second
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.results.run_folder import SERVER_PID_FILE, read_server_pid
from bench.results.server_metrics import COLUMNS, GUEST_COLUMNS, HYPERVISOR_COLUMNS, SERVER_METRICS_FILE
from server_under_test.environment import whole_disk

if TYPE_CHECKING:
    from bench.results.run_record import GuestView, HypervisorView, ResourcesRecord

INTERVAL = 1.0
STOP_GRACE = 5.0
START_TIMEOUT = 30.0  # seconds the sampler may take to start before the load goes ahead without its first rows
SCRAPE_TIMEOUT = 0.5  # a slow page costs this second's guest figures, not the row
HOST_ONLY = "/metrics?only=host"  # the archive's cheap page: its machine's CPU, no index queries


def scrape_cpu(metrics_url: str, timeout: float = SCRAPE_TIMEOUT) -> dict[str, float]:
    """CPU seconds by mode and the CPU count ("cpus") from an archive's /metrics; {} when it gives none."""
    try:
        with urllib.request.urlopen(metrics_url.rstrip("/") + HOST_ONLY, timeout=timeout) as answer:
            text = answer.read().decode(errors="replace")
    except (OSError, ValueError):
        return {}
    figures: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "pacsbench_host_cpu_seconds_total":
                    figures[sample.labels.get("mode", "")] = sample.value
                elif sample.name == "pacsbench_host_cpus":
                    figures["cpus"] = sample.value
    except ValueError:  # not Prometheus text: another archive's page
        return {}
    return figures


def guest_row(before: dict[str, float], now: dict[str, float]) -> dict:
    """The guest columns from two scrapes: shares of all the machine's CPU time between them."""
    modes = [m for m in now if m != "cpus" and m in before]
    total = sum(now[m] - before[m] for m in modes)
    if total <= 0 or "idle" not in modes:
        return {}

    def share(*names: str) -> float:
        return round(100 * sum(now[m] - before[m] for m in names if m in modes) / total, 1)

    idle = share("idle", "iowait", "steal")
    return {
        "guest_cpu_percent": round(100 - idle, 1),
        "guest_steal_percent": share("steal"),
        "guest_iowait_percent": share("iowait"),
        "guest_cpus": int(now.get("cpus", 0)) or "",
    }


def interface_with_address(address: str) -> str | None:
    """The network interface holding `address` (lo for 127.0.0.1); None if none does."""
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == address for a in addresses):
            return name
    return None


def _cpu_seconds(process: psutil.Process, with_children: bool) -> float:
    times = process.cpu_times()
    total = times.user + times.system
    # Children reaped by a process of the tree (dcmqrscp's per-association forks) end up in
    # its children_* times: counted, so short-lived workers are not lost.
    return total + (times.children_user + times.children_system if with_children else 0.0)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process, its descendants and the children they reaped; 0 once it is gone."""
    total = 0.0
    for process in _tree(pid):
        try:
            total += _cpu_seconds(process, with_children=True)
        except psutil.Error:
            continue  # it exited between the listing and the reading
    return total


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass
class Reading:
    """Cumulative counters at one instant; a row is the difference of two readings."""

    at: float
    server_cpu: float = 0.0
    server: dict = field(default_factory=dict)
    disk: tuple = (0, 0, 0)  # read bytes, write bytes, busy ms
    net: tuple = (0, 0)  # sent, received bytes
    load_cpu: dict = field(default_factory=dict)  # pid -> CPU seconds
    guest_cpu: dict = field(default_factory=dict)  # mode -> CPU seconds, from the archive's /metrics
    hypervisor: dict = field(default_factory=dict)  # a new hypervisor sample's columns, in the reading it arrived by


class Sampler:
    """Readings of one run's resources, and rows from consecutive readings."""

    def __init__(
        self,
        server_pid: int | None,
        cpus: float | None,
        load_pids: list[int],
        disk: str | None,
        interface: str | None,
        cpu_ids: list[int] | None = None,
        metrics_url: str | None = None,
        server_pid_file: Path | None = None,
        hypervisor=None,
    ):
        self.server_pid, self.cpus, self.load_pids = server_pid, cpus, load_pids
        self.metrics_url = metrics_url
        self.hypervisor = hypervisor  # a reader with take(): the newest sample not yet written (hypervisor_reader)
        # A fault (kill, restart) starts the archive again under a new pid: the target rewrites this file.
        self.server_pid_file = server_pid_file
        self.cpu_ids = cpu_ids or sorted(os.sched_getaffinity(0))
        self.disk, self.interface = disk, interface
        stats = psutil.net_if_stats().get(interface) if interface else None
        self.link_bytes_per_s = stats.speed * 125_000 if stats and stats.speed > 0 else 0
        psutil.cpu_times_percent()  # the first calls only start psutil's intervals
        psutil.cpu_percent(percpu=True)

    def read(self) -> Reading:
        reading = Reading(time.time())
        if self.server_pid_file:
            self.server_pid = read_server_pid(self.server_pid_file) or self.server_pid
        if self.server_pid:
            reading.server_cpu, reading.server = self._read_server()
        if self.disk and (d := psutil.disk_io_counters(perdisk=True).get(self.disk)):
            reading.disk = (d.read_bytes, d.write_bytes, d.busy_time)
        counters = psutil.net_io_counters(pernic=True).get(self.interface) if self.interface else None
        counters = counters or psutil.net_io_counters()
        reading.net = (counters.bytes_sent, counters.bytes_recv)
        for pid in self.load_pids:
            try:
                reading.load_cpu[pid] = _cpu_seconds(psutil.Process(pid), with_children=False)
            except psutil.Error:
                pass
        if self.metrics_url:
            reading.guest_cpu = scrape_cpu(self.metrics_url)
        if self.hypervisor is not None:
            reading.hypervisor = self.hypervisor.take()
        return reading

    def _read_server(self) -> tuple[float, dict]:
        cpu, figures = 0.0, {"server_rss_bytes": 0, "server_threads": 0, "server_open_fds": 0, "server_processes": 0}
        for process in _tree(self.server_pid):
            try:
                with process.oneshot():
                    cpu += _cpu_seconds(process, with_children=True)
                    figures["server_rss_bytes"] += process.memory_info().rss
                    figures["server_threads"] += process.num_threads()
                    figures["server_open_fds"] += process.num_fds()
                    figures["server_processes"] += 1
            except psutil.Error:
                continue  # it exited between the listing and the reading
        return cpu, figures

    def row(self, before: Reading, now: Reading) -> dict:
        seconds = max(now.at - before.at, 1e-6)

        def rate(a: float, b: float) -> float:
            return round(max(b - a, 0) / seconds, 1)

        row = {"time": round(now.at, 3)}
        if self.server_pid and now.server:
            server_cpu = 100 * max(now.server_cpu - before.server_cpu, 0) / seconds
            row |= {
                "server_cpu_percent": round(server_cpu, 1),
                "server_cpu_budget_percent": round(server_cpu / self.cpus, 1) if self.cpus else "",
                **now.server,
            }
        if self.disk:
            row |= {
                "disk_read_bytes_per_s": rate(before.disk[0], now.disk[0]),
                "disk_write_bytes_per_s": rate(before.disk[1], now.disk[1]),
                "disk_busy_percent": round(min(rate(before.disk[2], now.disk[2]) / 10, 100.0), 1),
            }
        host = psutil.cpu_times_percent()
        busy = psutil.cpu_percent(percpu=True)
        if self.server_pid:
            row["server_cpus_busy_percent"] = round(sum(busy[c] for c in self.cpu_ids) / len(self.cpu_ids), 1)
        row |= {
            "net_sent_bytes_per_s": rate(before.net[0], now.net[0]),
            "net_recv_bytes_per_s": rate(before.net[1], now.net[1]),
            "net_link_bytes_per_s": self.link_bytes_per_s,
            "host_cpu_percent": round(100 - host.idle - host.iowait - getattr(host, "steal", 0.0), 1),
            "host_iowait_percent": host.iowait,
            "host_steal_percent": getattr(host, "steal", 0.0),
        }
        load = [
            100 * max(now.load_cpu[pid] - before.load_cpu[pid], 0) / seconds
            for pid in now.load_cpu
            if pid in before.load_cpu
        ]
        if load:
            row |= {"load_cpu_percent": round(sum(load), 1), "load_busiest_cpu_percent": round(max(load), 1)}
        return row | guest_row(before.guest_cpu, now.guest_cpu) | now.hypervisor


def hypervisor_reader(source: dict):
    """The reader (start, take, stop) of the hypervisor's view that a target's hypervisor_source() names: esxi, its
    perf counters; virtualbox, `VBoxManage metrics`. Imported here only: only this sampler needs them."""
    if source.get("kind") == "esxi":
        from bench.targets.esxi.perf import hypervisor_reader as esxi_reader

        return esxi_reader(source)
    if source.get("kind") == "virtualbox":
        from bench.targets.virtualbox import hypervisor_reader as virtualbox_reader

        return virtualbox_reader(source)
    raise ValueError(f"no hypervisor view for {source.get('kind')!r}")


# Per hypervisor: the column that says a sample arrived, its sampling interval, where its figures come from.
HYPERVISOR_SOURCES = {
    "esxi": ("hypervisor_sample_time", 20, "PerformanceManager"),
    "virtualbox": ("hypervisor_cpu_user_pct", 1, "VBoxManage metrics query of the VM process"),
}


def sample(out: Path, sampler: Sampler, interval: float = INTERVAL, parent: int | None = None) -> None:
    """Write a row per interval until SIGTERM (or until `parent` is gone)."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with out.open("w", buffering=1) as rows:  # line-buffered: a row is on disk once written
        before, tick = sampler.read(), time.monotonic()
        rows.write(",".join(COLUMNS) + "\n")  # after the first reading: ResourceSampling waits for this line
        while not stopping and (parent is None or os.getppid() == parent):
            tick += interval
            time.sleep(max(tick - time.monotonic(), 0))
            now = sampler.read()
            row = sampler.row(before, now)
            rows.write(",".join(str(row.get(c, "")) for c in COLUMNS) + "\n")
            before = now


class ResourceSampling:
    """The sampler process for one run: `with ResourceSampling(...)` around the load."""

    def __init__(
        self,
        run_dir: Path,
        server_pid: int | None,
        cpus: float | None,
        load_pids: list[int],
        interface: str | None,
        cpu_ids: list[int] | None = None,
        metrics_url: str | None = None,
        hypervisor: dict | None = None,
    ):
        self.out = run_dir / SERVER_METRICS_FILE
        disk = whole_disk(run_dir)
        self.disk = disk.name if disk else None
        self.command = [
            sys.executable,
            "-m",
            "bench.runs.resources",
            "--out",
            str(self.out),
            "--parent",
            str(os.getpid()),
            "--load-pids",
            ",".join(map(str, load_pids)),
        ]
        self.command += (
            ["--server-pid", str(server_pid), "--server-pid-file", str(run_dir / SERVER_PID_FILE)] if server_pid else []
        )
        self.command += ["--cpus", str(cpus)] if cpus else []
        self.command += ["--disk", self.disk] if self.disk else []
        self.command += ["--interface", interface] if interface else []
        self.command += ["--cpu-ids", ",".join(map(str, cpu_ids))] if cpu_ids else []
        self.command += ["--metrics-url", metrics_url] if metrics_url else []
        self.command += ["--hypervisor", json.dumps(hypervisor)] if hypervisor else []
        self.metrics_url, self.hypervisor = metrics_url, hypervisor
        self.facts = {
            "file": SERVER_METRICS_FILE,
            "interval_seconds": INTERVAL,
            "server_pid": server_pid,
            "budget_cpus": cpus,
            "load_pids": load_pids,
            "disk": self.disk,
            "interface": interface,
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ResourceSampling":
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL)
        self._wait_for_first_reading()
        return self

    def _wait_for_first_reading(self) -> None:
        """Until the sampler has its first reading (it writes the header line after it), so that the rows cover the
        load from its first second: on a busy host the sampler's Python took seconds to start, and the first rows
        of a 10 s load were missing (8 rows, make test). A sampler that exits or takes over START_TIMEOUT does not
        hold the run up; its exit code is in the run record."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if b"\n" in self.out.read_bytes():
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.05)

    def __exit__(self, *_) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def describe(self) -> ResourcesRecord:
        # Imported here: the sampler's own process (main below) starts with the load and needs no records.
        from bench.results.run_record import ResourcesRecord

        return ResourcesRecord(
            **self.facts,
            guest_view=self.guest_view(),
            hypervisor_view=self.hypervisor_view(),
            exit_code=self.process.returncode if self.process else None,
        )

    def column_rows(self, column: str) -> tuple[int, int]:
        """Rows written, and rows with a value in `column`."""
        rows = with_values = 0
        if self.out.is_file():
            lines = self.out.read_text().splitlines()
            at = lines[0].split(",").index(column) if lines and column in lines[0].split(",") else -1
            for line in lines[1:]:
                rows += 1
                with_values += bool(line.split(",")[at]) if at >= 0 else 0
        return rows, with_values

    def hypervisor_view(self) -> HypervisorView | None:
        """What the hypervisor columns hold: from where, how many samples, and whether they are synthetic."""
        from bench.results.run_record import HypervisorView  # as in describe()

        if not self.hypervisor:
            return None
        kind = self.hypervisor["kind"]
        sample_column, interval, what = HYPERVISOR_SOURCES[kind]
        _, samples = self.column_rows(sample_column)
        simulated = bool(self.hypervisor.get("simulator"))
        host = (self.hypervisor.get("spec") or {}).get("host") or "this host"
        view = HypervisorView(
            source=f"{kind} {what}, {host}, VM {self.hypervisor.get('vm')}",
            interval_seconds=interval,
            columns=list(HYPERVISOR_COLUMNS),
            samples=samples,
            sampled=samples > 0,
            synthetic=simulated,
        )
        if simulated:
            view.note = "govmomi's simulator answers QueryPerf with synthetic values: these figures measure nothing"
        elif not samples:
            view.note = f"no sample arrived during the load (a load shorter than {interval} s, or no access)"
        return view

    def guest_view(self) -> GuestView:
        """What the archive's own /metrics gave the guest columns: scraped from where, how many rows got them."""
        from bench.results.run_record import GuestView  # as in describe()

        if not self.metrics_url:
            return GuestView(
                sampled=False,
                columns=list(GUEST_COLUMNS),
                why="no metrics URL for this target (guest columns are for kvm, tcg and remote targets)",
            )
        rows, with_values = self.column_rows("guest_cpu_percent")
        view = GuestView(
            url=self.metrics_url.rstrip("/") + HOST_ONLY,
            columns=list(GUEST_COLUMNS),
            rows=rows,
            rows_with_values=with_values,
            sampled=with_values > 0,
        )
        if not with_values:
            view.why = (
                "the metrics URL gave no pacsbench_host_cpu_seconds (not the reference archive, or not "
                "answering): the guest columns are empty"
            )
        return view


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runs.resources", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--server-pid-file", type=Path, help="re-read each interval: the archive's pid after a restart")
    parser.add_argument("--cpus", type=float)
    parser.add_argument("--load-pids", default="")
    parser.add_argument("--disk")
    parser.add_argument("--interface")
    parser.add_argument("--cpu-ids", default="")
    parser.add_argument("--metrics-url", help="an archive's HTTP base URL whose /metrics gives its own CPU figures")
    parser.add_argument("--hypervisor", type=json.loads, help="a target's hypervisor_source() (JSON): the VM to read")
    parser.add_argument("--parent", type=int)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    load_pids = [int(p) for p in args.load_pids.split(",") if p]
    cpu_ids = [int(c) for c in args.cpu_ids.split(",") if c]
    sampler = Sampler(
        args.server_pid,
        args.cpus,
        load_pids,
        args.disk,
        args.interface,
        cpu_ids,
        args.metrics_url,
        args.server_pid_file,
        hypervisor_reader(args.hypervisor) if args.hypervisor else None,
    )
    if sampler.hypervisor is not None:
        sampler.hypervisor.start()
    try:
        sample(args.out, sampler, args.interval, args.parent)
    finally:
        if sampler.hypervisor is not None:
            sampler.hypervisor.stop()


if __name__ == "__main__":
    main()
