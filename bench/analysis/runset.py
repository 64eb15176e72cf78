"""The runs a report or comparison reads: plain run folders, or matrix folders listing them.

A matrix folder holds `matrix.json` (bench.results.records.MatrixRecord): the scenario and its
runs, each a folder relative to the matrix folder (or absolute), a target and a repetition. For
a plain run folder the target label is run.json's target label, else its kind, and repetitions
count up per target in the order the folders were given.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.analysis.aggregate import load_samples
from bench.common.errors import UserError
from bench.results.record_base import read_record
from bench.results.records import MATRIX_FILE, MatrixRecord, MatrixRun
from bench.results.run_file import read_run_json
from bench.results.run_record import CalibrationRecord, RunRecord


@dataclass
class RunData:
    folder: Path
    run: RunRecord
    samples: pd.DataFrame
    target: str
    repetition: int
    hypervisor: str | None = None

    @property
    def scenario(self) -> str:
        return str(self.run.scenario.get("name", ""))

    @property
    def users(self) -> int:
        """Concurrent users (associations) the scenario asked for; the samples' count if not recorded."""
        users = (self.run.scenario.get("load") or {}).get("users")
        return int(users) if users else int(self.samples["user"].nunique())

    @property
    def calibration(self) -> CalibrationRecord | None:
        return self.run.calibration

    @property
    def completed(self) -> bool:
        return self.run.status == "completed"

    @property
    def stop_at(self) -> float | None:
        """When the stop signal was given (Unix s): the load's start plus its duration, for a run that ran
        its course; None when run.json does not say (the last response then ends the measured span)."""
        started = self.run.started
        duration = (self.run.scenario.get("load") or {}).get("duration")
        if not (self.completed and started and duration):
            return None
        try:
            return dt.datetime.fromisoformat(str(started)).timestamp() + float(duration)
        except ValueError:
            return None


def load_run(folder: Path, target: str | None = None, repetition: int = 1, hypervisor: str | None = None) -> RunData:
    samples = load_samples(folder)  # checks the folder and the samples first: the clearest error
    run = read_run_json(folder)
    return RunData(folder, run, samples, target or run.target_label, repetition, hypervisor)


def load_matrix(folder: Path) -> list[RunData]:
    matrix = read_record(MatrixRecord, folder / MATRIX_FILE, "a matrix record")
    return [_matrix_run(folder, matrix.scenario, entry) for entry in matrix.runs]


def _matrix_run(folder: Path, scenario: str, entry: MatrixRun) -> RunData:
    path = Path(entry.folder)
    run = load_run(path if path.is_absolute() else folder / path, entry.target, entry.repetition, entry.hypervisor)
    if scenario and run.scenario != scenario:
        raise UserError(f"{run.folder}: scenario {run.scenario!r} is not the matrix's scenario {scenario!r}")
    return run


def load_runs(paths: list[Path]) -> list[RunData]:
    """Every run named by `paths` (run folders or matrix folders), all of one scenario."""
    runs: list[RunData] = []
    repetitions: Counter[str] = Counter()
    for path in paths:
        if (path / MATRIX_FILE).is_file():
            runs += load_matrix(path)
            continue
        run = load_run(path)
        repetitions[run.target] += 1
        run.repetition = repetitions[run.target]
        runs.append(run)
    check_one_scenario(runs)
    return runs


def check_completed(runs: list[RunData], include_incomplete: bool) -> None:
    """A run that did not complete (stopped early, failed, interrupted) is not compared unless asked."""
    incomplete = [f"{r.folder.name}: {r.run.status or 'no status'}" for r in runs if not r.completed]
    if incomplete and not include_incomplete:
        raise UserError(
            f"runs that did not complete ({'; '.join(incomplete)}): their figures cover part of "
            "the load; pass --include-incomplete to use them anyway"
        )


def check_one_scenario(runs: list[RunData]) -> None:
    names = sorted({r.scenario for r in runs})
    if len(names) > 1:
        listed = ", ".join(f"{r.folder.name}: {r.scenario!r}" for r in runs)
        raise UserError(f"runs of different scenarios cannot be compared ({listed})")
