"""Resource budgets for archives run as local processes: N CPUs and M bytes, in a cgroup or by CPU affinity.

A guest gets its budget as vCPUs and RAM; a local archive (native, orthanc, dcmtk) gets the
same figures from a cgroup made for its run: cgroup v2 where the process's own cgroup offers
the cpu and memory controllers, else v1's `cpuset`, `cpu` (a CFS quota of N periods per
period) and `memory` hierarchies, else CPU affinity alone (no memory limit). The archive
enters the cgroup between fork and exec (`enter`, a preexec_fn), so every process it forks
later is in it too. Each cgroup is made under the cgroup this process is in, never at the
top: whatever placed us there keeps counting what we start.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CFS_PERIOD_US = 100_000
CONTROLLERS_V1 = ("cpuset", "cpu", "memory")
CONTROLLERS_V2 = ("cpu", "memory")  # cpuset too when offered
RELEASE_SECONDS = 5.0  # a killed process group takes a moment to leave its cgroup


def chosen_cpus(count: int) -> list[int]:
    """The CPUs a budget of `count` runs on: the last `count` of those this process may use.

    The last ones because interrupts and the harness's own first process tend to land on CPU 0."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-count:] if count < len(allowed) else allowed


def cpu_list(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of every cgroup file system."""
    return [
        (mount.mountpoint, mount.fstype, set(mount.opts.split(",")))
        for mount in psutil.disk_partitions(all=True)
        if mount.fstype in ("cgroup", "cgroup2")
    ]


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its v2 cgroup (from /proc/self/cgroup)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _write(path: Path, value: str) -> None:
    path.write_text(value)


@dataclass
class Budget:
    """CPUs and memory for one local archive, and what enforces them once `prepare` has run."""

    cpus: int
    memory_bytes: int
    name: str
    enforced_by: str = "none"
    folders: list[Path] = field(default_factory=list)  # the cgroups made (one for v2, one per controller for v1)
    controllers: list[str] = field(default_factory=list)
    cpu_ids: list[int] = field(default_factory=list)
    usage: dict = field(default_factory=dict)  # read as the cgroup is removed: did the limits bite?

    def prepare(self) -> None:
        """Make the cgroup(s); fall back to v1, then to affinity alone. Never raises for want of cgroups."""
        self.cpu_ids = chosen_cpus(self.cpus)
        for attempt in (self._cgroup_v2, self._cgroup_v1):
            try:
                if attempt():
                    return
            except OSError:
                self.release()
                self.controllers = []
        self.enforced_by = "affinity"

    def _cgroup_v2(self) -> bool:
        mount = next((point for point, kind, _ in _mounts() if kind == "cgroup2"), None)
        if mount is None:
            return False
        parent = Path(mount) / _own_paths().get("", "/").lstrip("/")
        offered = set((parent / "cgroup.controllers").read_text().split())
        if not set(CONTROLLERS_V2) <= offered:
            return False
        wanted = [c for c in ("cpuset", *CONTROLLERS_V2) if c in offered]
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        folder = parent / self.name
        folder.mkdir()
        self.folders = [folder]
        _write(folder / "cpu.max", f"{self.cpus * CFS_PERIOD_US} {CFS_PERIOD_US}")
        _write(folder / "memory.max", str(self.memory_bytes))
        if "cpuset" in wanted:
            _write(folder / "cpuset.cpus", cpu_list(self.cpu_ids))
        self.controllers, self.enforced_by = wanted, "cgroup-v2"
        return True

    def _cgroup_v1(self) -> bool:
        mounts = {
            c: point for point, kind, options in _mounts() if kind == "cgroup" for c in CONTROLLERS_V1 if c in options
        }
        own = _own_paths()
        if not all(c in mounts and c in own for c in ("cpu", "memory")):
            return False
        for controller in (c for c in CONTROLLERS_V1 if c in mounts):
            parent = Path(mounts[controller]) / own[controller].lstrip("/")
            folder = parent / self.name
            folder.mkdir()
            self.folders.append(folder)
            self._limit_v1(controller, parent, folder)
            self.controllers.append(controller)
        self.enforced_by = "cgroup-v1"
        return True

    def _limit_v1(self, controller: str, parent: Path, folder: Path) -> None:
        if controller == "cpuset":
            _write(folder / "cpuset.cpus", cpu_list(self.cpu_ids))
            # A v1 cpuset takes no process before it has memory nodes: the parent's.
            _write(folder / "cpuset.mems", (parent / "cpuset.mems").read_text().strip())
        elif controller == "cpu":
            _write(folder / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(folder / "cpu.cfs_quota_us", str(self.cpus * CFS_PERIOD_US))
        else:
            _write(folder / "memory.limit_in_bytes", str(self.memory_bytes))

    def enter(self) -> None:
        """Put the calling process in the budget: a preexec_fn, run in the child between fork and exec."""
        if self.folders:
            pid = str(os.getpid())
            for folder in self.folders:
                _write(folder / "cgroup.procs", pid)
        elif self.enforced_by == "affinity":
            os.sched_setaffinity(0, self.cpu_ids)

    def release(self) -> None:
        """Remove the cgroups (after the archive stopped); a cgroup still emptying gets a few seconds."""
        if self.folders and not self.usage:
            self.usage = self._usage()
        deadline = time.monotonic() + RELEASE_SECONDS
        for folder in self.folders:
            while folder.exists():
                try:
                    folder.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
        self.folders = []

    def _usage(self) -> dict:
        """CFS periods in which the quota stopped the archive, and its peak memory, from the cgroup's own files."""
        found = {}
        for folder in self.folders:
            if (folder / "cpu.stat").exists():
                stat = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines() if " " in line)
                throttled_us = int(stat.get("throttled_usec", 0)) or int(stat.get("throttled_time", 0)) // 1000
                found |= {
                    "cpu_periods": int(stat.get("nr_periods", 0)),
                    "cpu_throttled_periods": int(stat.get("nr_throttled", 0)),
                    "cpu_throttled_seconds": round(throttled_us / 1e6, 3),
                }
            for name in ("memory.max_usage_in_bytes", "memory.peak"):
                if (folder / name).exists():
                    found["memory_peak_bytes"] = int((folder / name).read_text())
        return found

    def describe(self) -> dict:
        return {
            "cpus": self.cpus,
            "memory_bytes": self.memory_bytes,
            "enforced_by": self.enforced_by,
            "controllers": self.controllers,
            "cpu_ids": self.cpu_ids,
            **({"usage": self.usage} if self.usage else {}),
        }


def guest_budget(cpus: int, memory_mib: int) -> dict:
    """What run.json records for a guest: its vCPUs and RAM are the budget."""
    return {"cpus": cpus, "memory_bytes": memory_mib << 20, "enforced_by": "guest"}
