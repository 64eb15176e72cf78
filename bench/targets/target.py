"""The Target type: what a run asks of the archive under test, whatever its kind.

A run (bench.runs) only ever holds a Target made by `bench.targets.make_target`: it may set
the C-MOVE destinations, starts the target, reads `peer`, collects its metrics, stops it
and records `describe()` in run.json.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from bench.common.errors import UserError
from bench.dicom.peer import Peer
from bench.results.run_folder import write_server_pid
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import TargetSpec
from bench.targets.budget import Budget

NO_BUDGET = {"cpus": None, "memory_bytes": None, "enforced_by": "none"}


class Target(ABC):
    """One archive under test: started (or reached) for one run, then stopped."""

    kind: str = ""

    def __init__(self, spec: TargetSpec, client: ClientSpec):
        self.spec = spec
        self.client = client
        self.peer: Peer | None = None  # where the load goes; known once start() returned
        self.ready_seconds: float | None = None  # from start() to the first C-ECHO answer
        self.status: dict = {}  # the archive's own /status answer at start, when it has one
        # C-MOVE destinations (AE title -> host, port) the harness's Storage SCPs listen on. Set
        # before start(); a kind that pacsbench configures (native) writes them into the
        # archive's configuration, the others must already know them.
        self.destinations: dict[str, tuple[str, int]] = {}
        self.budget: Budget | None = None  # a local archive's cgroup (or affinity), from prepare_budget()

    @property
    def label(self) -> str:
        """The name reports and `compare` group runs by."""
        return self.spec.label or self.kind

    def prepare_budget(self, run_dir: Path) -> Budget:
        """The scenario's cpus and memory_mib for an archive started here; its process calls `budget.enter`."""
        self.budget = Budget(self.spec.cpus, self.spec.memory_mib << 20, f"pacsbench-{run_dir.name}-{self.kind}")
        self.budget.prepare()
        return self.budget

    def release_budget(self) -> None:
        if self.budget is not None:
            self.budget.release()

    def budget_record(self) -> dict:
        """run.json's target.budget: cpus, memory_bytes and what enforces them."""
        return self.budget.describe() if self.budget else dict(NO_BUDGET)

    def server_pid(self) -> int | None:
        """The root of the archive's process tree on this host (the archive, or QEMU); None when remote."""
        return None

    def guest_metrics_url(self) -> str | None:
        """Where the archive's own view of its machine (CPU, steal) is read each second: a guest's or a
        remote archive's metrics URL; None when the sampler sees the archive's machine itself (or nothing)."""
        return None

    def hypervisor_sampling(self) -> list[str]:
        """Options of the resource sampler (bench.runs.resources) for the hypervisor's own view of the archive's VM,
        sampled beside the other columns; [] when the hypervisor has none to give."""
        return []

    def record_server_pid(self, run_dir: Path) -> None:
        """server.pid in the run folder, after each (re)start: the resource sampler follows the archive by it."""
        if pid := self.server_pid():
            write_server_pid(run_dir, pid)

    @abstractmethod
    def start(self, run_dir: Path) -> None:
        """Start the archive (its files and logs go in run_dir) and return once it answers C-ECHO."""

    # Faults (bench.runs.faults): only kinds that implement these can take them.
    def signal_archive(self, signum: int) -> None:
        """Send `signum` to every process of the archive (a kill, stop, pause or continue)."""
        raise UserError(f"the {self.kind} target cannot take faults")

    def wait_for_exit(self, timeout: float) -> int | None:
        """Wait until the signalled archive is gone (SIGKILL after `timeout`); its exit code."""
        raise UserError(f"the {self.kind} target cannot take faults")

    def start_again(self) -> float:
        """Start the stopped archive again on the same data and port; the seconds until it answered C-ECHO."""
        raise UserError(f"the {self.kind} target cannot be started again")

    def back_up(self, name: str) -> dict:
        """An online backup of the archive while it stores, into a folder of the run called `name`; its figures."""
        raise UserError(f"the {self.kind} target cannot be backed up by pacsbench")

    def restore_data(self, backup: dict) -> dict:
        """With the archive stopped: lose its data folder, restore it from `backup` (back_up's figures); the figures."""
        raise UserError(f"the {self.kind} target cannot be restored by pacsbench")

    def set_network(self, up: bool) -> None:
        """Take the archive's network link down (up=False) or bring it back (a network-down fault)."""
        raise UserError(f"the {self.kind} target cannot take a network-down fault")

    def collect_metrics(self, run_dir: Path) -> None:  # noqa: B027 (optional: not every archive has figures)
        """Save the archive's own figures next to the samples, while it still runs."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what start() started; safe to call twice, or after a failed start."""

    @abstractmethod
    def describe(self) -> dict:
        """The facts run.json records under "target" (kind, label, address, hypervisor, settings ...)."""
