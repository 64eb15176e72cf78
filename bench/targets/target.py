"""The Target type: what a run asks of the archive under test, whatever its kind.

A run (bench.runs) only ever holds a Target made by `bench.targets.make_target`: it may set
the C-MOVE destinations, starts the target, reads `peer`, collects its metrics, stops it
and records `describe()` in run.json.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from bench.dicom.peer import Peer
from bench.load.scenario import ClientSpec, TargetSpec


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

    @property
    def label(self) -> str:
        """The name reports and `compare` group runs by."""
        return self.spec.label or self.kind

    @abstractmethod
    def start(self, run_dir: Path) -> None:
        """Start the archive (its files and logs go in run_dir) and return once it answers C-ECHO."""

    def collect_metrics(self, run_dir: Path) -> None:  # noqa: B027 (optional: not every archive has figures)
        """Save the archive's own figures next to the samples, while it still runs."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what start() started; safe to call twice, or after a failed start."""

    @abstractmethod
    def describe(self) -> dict:
        """The facts run.json records under "target" (kind, label, address, hypervisor, settings ...)."""
