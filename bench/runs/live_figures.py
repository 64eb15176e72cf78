"""The live figures of a run as it goes (what `pacsbench run --web`'s live page and tabs show), from what the
run already produces; bench.runs.live serves them. No locust, no Flask here: the figures are plain data.

- instances/s, frames/s and MB/s per user type, per second, from the same request rows as
  samples.csv (fed by bench.runs.live: local users' request events, the rows in workers' reports);
- the target's per-second resources: every numeric column of server_metrics.csv the sampler has
  written so far (whatever a target kind adds, hypervisor_* included), none before its first row;
- the faults as they fire (the injector's events);
- the "bounded by" verdict of bench.analysis.bounds on the rows since the load started.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.analysis.aggregate import load_server_metrics
from bench.analysis.bounds import bound_by, measured_rows, verdict_text
from bench.results.samples import Row, request_sample, sample_row
from server_under_test.upper_layer.status import is_done

if TYPE_CHECKING:
    from bench.runs.faults import FaultEvent

RATE_SECONDS = 10  # the figures "now": the mean of the last complete seconds
HISTORY_SECONDS = 600  # the page's charts show at most this much
NO_ROWS_YET = "no resource rows yet: the sampler writes one a second once the target answers"


class UserTypeRates:
    """Per second and user type: requests, failed, and the acknowledged instances, frames and bytes."""

    def __init__(self) -> None:
        self.seconds: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0, 0]))

    def on_request(self, name: str, response_time: float, response_length: int, exception, context, **_) -> None:
        """A local user's request event, turned into its row as the rows listener does."""
        if "user_type" in context:
            error = str(exception) if exception else ""
            self.add(sample_row(request_sample(name, response_time, response_length, error, context)))

    def add(self, row: Row) -> None:
        counts = self.seconds[int(float(row["start"]))][str(row["user_type"])]
        counts[0] += 1
        if is_done(int(row["status"])):
            counts[2] += int(row["instances"])
            counts[3] += int(row["frames"])
            counts[4] += int(row["bytes"])
        else:
            counts[1] += 1

    def now(self, at: float, since: float) -> dict[str, dict[str, float]]:
        """Per user type, the rates over the last RATE_SECONDS complete seconds (fewer when the load began since)."""
        last = int(at) - 1  # the current second is still filling
        first = max(last - RATE_SECONDS + 1, int(since))
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for second in range(first, last + 1):
            for user_type, counts in self.seconds.get(second, {}).items():
                totals[user_type] = [a + b for a, b in zip(totals[user_type], counts, strict=True)]
        seconds = max(1, last - first + 1)
        return {user_type: _rates(counts, seconds) for user_type, counts in sorted(totals.items())}

    def series(self, since: float, at: float) -> dict[str, list[list[float]]]:
        """Per user type, [second, instances/s, frames/s, MB/s] for each complete second since `since`."""
        first = max(int(since), int(at) - HISTORY_SECONDS)
        types = sorted({t for s in range(first, int(at)) for t in self.seconds.get(s, {})})
        out: dict[str, list[list[float]]] = {t: [] for t in types}
        for second in range(first, int(at)):
            for user_type in types:
                counts = self.seconds.get(second, {}).get(user_type, [0, 0, 0, 0, 0])
                out[user_type].append([second, counts[2], counts[3], round(counts[4] / 1e6, 3)])
        return out


def _rates(counts: list[int], seconds: int) -> dict[str, float]:
    requests, failed, instances, frames, size = counts
    return {
        "requests_per_s": round(requests / seconds, 2),
        "failed_per_s": round(failed / seconds, 2),
        "instances_per_s": round(instances / seconds, 2),
        "frames_per_s": round(frames / seconds, 1),
        "mb_per_s": round(size / 1e6 / seconds, 2),
    }


class LiveFigures:
    """The live figures of one run: made before the load engine, told the run's facts as they become known."""

    def __init__(self, run_dir: Path, scenario: str, caption: str = ""):
        self.run_dir, self.scenario, self.caption = run_dir, scenario, caption
        self.rates = UserTypeRates()
        self.target = ""  # the target's label and kind, once it is up
        self.cpus: float | None = None  # the archive's CPU budget (bounds' share)
        self.load_started: float | None = None
        self.faults: list[FaultEvent] = []
        self._verdict_cache: tuple[float, dict] | None = None

    def user_type_rows(self) -> list[dict]:
        """Per user type, its rates now, one row each."""
        at = time.time()
        return [{"user_type": t, **r} for t, r in self.rates.now(at, self.load_started or at).items()]

    def resource_rows(self) -> list[dict]:
        """The verdict so far, then each resource column's last second and mean, as text."""
        resources_now = self.resources(time.time())
        verdict = resources_now["bound_by"]
        rows = [{"name": "bounded by (so far)", "now": verdict["limit"], "mean": verdict["evidence"]}]
        return rows + [
            {"name": name, "now": column["now_text"], "mean": column["mean_text"]}
            for name, column in resources_now["columns"].items()
        ]

    def snapshot(self, state: str, users: int) -> dict:
        """Everything the live page draws, as of now (`state` and `users`: the load runner's)."""
        at = time.time()
        since = self.load_started or at
        return {
            "time": at,
            "run_id": self.run_dir.name,
            "scenario": self.scenario,
            "caption": self.caption,
            "target": self.target,
            "state": state,
            "users": users,
            "load_started": self.load_started,
            "user_types": self.rates.now(at, since),
            "user_type_series": self.rates.series(since, at),
            "faults": [_fault(event) for event in self.faults],
            **self.resources(at),
        }

    def resources(self, at: float) -> dict:
        """server_metrics.csv so far: each column's series, last value and mean since the load began; the verdict.

        Read at most once a second: the page and locust's tab both ask."""
        if self._verdict_cache is not None and at - self._verdict_cache[0] < 1.0:
            return self._verdict_cache[1]
        frame, _ = load_server_metrics(self.run_dir)
        note = (
            "" if frame is not None else "no resource rows yet: the sampler writes one a second once the target answers"
        )
        result: dict = {"columns": {}, "resource_note": note, "bound_by": _verdict(None, None)}
        if frame is not None and self.load_started is not None:
            since = measured_rows(frame, self.load_started, at)
            shown = frame[frame["time"] >= at - HISTORY_SECONDS]
            shown_columns = [c for c in frame.columns if c != "time" and frame[c].notna().any()]
            result["columns"] = {name: _column(name, shown, since) for name in shown_columns}
            result["bound_by"] = _verdict(since if len(since) else None, self.cpus)
        self._verdict_cache = (at, result)
        return result


def _verdict(rows, cpus: float | None) -> dict:
    verdict = bound_by(rows, cpus)
    return {"limit": verdict["limit"], "evidence": verdict["evidence"], "text": verdict_text(verdict)}


def _column(name: str, shown, since) -> dict:
    """One resource column: its series (time, value), its last value and mean since the load began, as text too.

    Plain lists from numpy at once: asked every second, in the load process."""
    now = _number(shown[name].iloc[-1]) if len(shown) else None
    mean = _number(since[name].mean()) if len(since) else None
    values = np.round(shown[name].to_numpy(dtype=float), 3).tolist()
    return {
        "now": now,
        "mean": mean,
        "now_text": _with_unit(name, now),
        "mean_text": _with_unit(name, mean),
        "series": [
            [t, None if math.isnan(v) else v]
            for t, v in zip(np.round(shown["time"].to_numpy(dtype=float), 3).tolist(), values, strict=True)
        ],
    }


def _with_unit(name: str, value: float | None) -> str:
    """A value as its column's name says (server_metrics.csv's suffixes: _percent, _bytes_per_s, _bytes)."""
    if value is None:
        return "–"
    if name.endswith("_bytes_per_s"):
        return f"{value / 1e6:.1f} MB/s"
    if name.endswith("_bytes"):
        return f"{value / 1e6:.0f} MB"
    if name.endswith("_percent"):
        return f"{value:.1f}%"
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _number(value) -> float | None:
    """JSON has no NaN: an empty cell is null."""
    value = float(value)
    return None if math.isnan(value) else round(value, 3)


def _fault(event: FaultEvent) -> dict:
    spec = event.spec
    return {
        "action": spec.action,
        "at": spec.at,
        "fired": event.unix_time,
        "resumed": event.resumed_unix_time,
        "error": event.error,
    }
