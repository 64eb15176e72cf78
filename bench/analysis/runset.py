"""The runs a report or comparison reads: plain run folders, or matrix folders listing them.

A matrix folder holds `matrix.json`:
    {"scenario": "smoke",
     "runs": [{"folder": "native-1", "target": "native", "repetition": 1, "hypervisor": "none"}, ...]}
`folder` is relative to the matrix folder (or absolute). For a plain run folder the target
label is run.json["target"]["label"] when present, else run.json["target"]["kind"], and
repetitions count up per target in the order the folders were given.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.analysis.aggregate import load_samples
from bench.common.errors import UserError
from bench.results.run_folder import RUN_FILE

MATRIX_FILE = "matrix.json"


@dataclass
class RunData:
    folder: Path
    run: dict
    samples: pd.DataFrame
    target: str
    repetition: int
    hypervisor: str | None = None

    @property
    def scenario(self) -> str:
        return str((self.run.get("scenario") or {}).get("name", ""))

    @property
    def users(self) -> int:
        """Concurrent users (associations) the scenario asked for; the samples' count if not recorded."""
        users = ((self.run.get("scenario") or {}).get("load") or {}).get("users")
        return int(users) if users else int(self.samples["user"].nunique())

    @property
    def calibration(self) -> dict | None:
        return self.run.get("calibration") or None

    @property
    def completed(self) -> bool:
        return self.run.get("status") == "completed"

    @property
    def stop_at(self) -> float | None:
        """When the stop signal was given (Unix s): the load's start plus its duration, for a run that ran
        its course; None when run.json does not say (the last response then ends the measured span)."""
        started = self.run.get("started")
        duration = ((self.run.get("scenario") or {}).get("load") or {}).get("duration")
        if not (self.completed and started and duration):
            return None
        try:
            return dt.datetime.fromisoformat(str(started)).timestamp() + float(duration)
        except ValueError:
            return None


def read_json(path: Path, what: str, missing: str = "") -> dict:
    """A JSON object from `path`, or a one-line UserError (`missing` when the file is absent)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(missing or f"{path.parent}: no {path.name} ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object")
    return data


def target_label(run: dict) -> str:
    target = run.get("target") or {}
    return str(target.get("label") or target.get("kind") or "unknown")


def load_run(folder: Path, target: str | None = None, repetition: int = 1, hypervisor: str | None = None) -> RunData:
    samples = load_samples(folder)  # checks the folder and the samples first: the clearest error
    run = read_json(folder / RUN_FILE, "the run record")
    return RunData(folder, run, samples, target or target_label(run), repetition, hypervisor)


def _matrix_entries(folder: Path) -> tuple[str, list[dict]]:
    matrix = read_json(folder / MATRIX_FILE, "the matrix record")
    runs = matrix.get("runs")
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{folder / MATRIX_FILE}: 'runs' must be a non-empty list")
    for i, entry in enumerate(runs):
        if not isinstance(entry, dict) or not entry.get("folder") or not entry.get("target"):
            raise UserError(f"{folder / MATRIX_FILE}: runs[{i}] needs 'folder' and 'target'")
    return str(matrix.get("scenario", "")), runs


def load_matrix(folder: Path) -> list[RunData]:
    scenario, entries = _matrix_entries(folder)
    runs = []
    for entry in entries:
        path = Path(entry["folder"])
        run = load_run(
            path if path.is_absolute() else folder / path,
            str(entry["target"]),
            int(entry.get("repetition", 1)),
            entry.get("hypervisor"),
        )
        if scenario and run.scenario != scenario:
            raise UserError(f"{run.folder}: scenario {run.scenario!r} is not the matrix's scenario {scenario!r}")
        runs.append(run)
    return runs


def load_runs(paths: list[Path]) -> list[RunData]:
    """Every run named by `paths` (run folders or matrix folders), all of one scenario."""
    runs: list[RunData] = []
    repetitions: Counter = Counter()
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
    incomplete = [f"{r.folder.name}: {r.run.get('status') or 'no status'}" for r in runs if not r.completed]
    if incomplete and not include_incomplete:
        raise UserError(f"runs that did not complete ({'; '.join(incomplete)}): their figures cover part of "
                        "the load; pass --include-incomplete to use them anyway")


def check_one_scenario(runs: list[RunData]) -> None:
    names = sorted({r.scenario for r in runs})
    if len(names) > 1:
        listed = ", ".join(f"{r.folder.name}: {r.scenario!r}" for r in runs)
        raise UserError(f"runs of different scenarios cannot be compared ({listed})")
