"""Load shapes (locust LoadTestShape): steps of user counts, or a linear ramp, and per-step figures.

A step run (the ingest sweep: 1, 2, 4, 8, 16 associations) notes when each step began;
`step_figures` then cuts the run's samples at those times, so one run gives throughput
against associations, computed from sample rows like every other figure.
"""

from __future__ import annotations

import math
import time

import pandas as pd
from locust import LoadTestShape

from bench.scenario import LoadSpec

STEP_SETTLE_SHARE = 0.2  # the first 20% of each step (users starting, queues filling) is not measured


class StepShape(LoadTestShape):
    def __init__(self, steps: list[int], step_seconds: float, spawn_rate: float | None):
        super().__init__()
        self.steps, self.step_seconds = steps, step_seconds
        self.spawn_rate = spawn_rate or max(steps)
        self.began: list[dict] = []  # {"users": n, "start": unix time} per step, as it began

    def tick(self):
        index = int(self.get_run_time() // self.step_seconds)
        if index >= len(self.steps):
            return None
        if len(self.began) <= index:
            self.began.append({"users": self.steps[index], "start": time.time()})
        return self.steps[index], self.spawn_rate


class RampShape(LoadTestShape):
    """From one user to `users` over `ramp_seconds`, then hold until `duration`."""

    def __init__(self, users: int, ramp_seconds: float, duration: float, spawn_rate: float | None):
        super().__init__()
        self.users, self.ramp_seconds, self.duration = users, ramp_seconds, duration
        self.spawn_rate = spawn_rate or users
        self.began: list[dict] = []

    def tick(self):
        elapsed = self.get_run_time()
        if elapsed >= self.duration:
            return None
        return max(1, math.ceil(self.users * min(1.0, elapsed / self.ramp_seconds))), self.spawn_rate


def make_shape(load: LoadSpec) -> LoadTestShape | None:
    if load.shape == "steps":
        return StepShape(load.steps, load.step_seconds, load.spawn_rate)
    if load.shape == "ramp":
        return RampShape(load.users, load.ramp_seconds, load.duration, load.spawn_rate)
    return None


def step_figures(samples: pd.DataFrame, steps: list[dict], run_end: float) -> list[dict]:
    """Acknowledged C-STORE throughput and latency per step (its first 20% left out)."""
    rows = []
    ends = [s["start"] for s in steps[1:]] + [run_end]
    done = samples["start"] + samples["latency_ms"] / 1000.0
    stores = (samples["operation"] == "C-STORE") & (samples["status"] == 0)
    for step, end in zip(steps, ends):
        begin = step["start"] + STEP_SETTLE_SHARE * (end - step["start"])
        seconds = max(end - begin, 1e-9)
        ok = samples[stores & (done >= begin) & (done < end)]
        rows.append(
            {
                "users": step["users"],
                "seconds": round(seconds, 2),
                "instances_per_s": round(len(ok) / seconds, 2),
                "frames_per_s": round(float(ok["frames"].sum()) / seconds, 2),
                "mb_per_s": round(float(ok["bytes"].sum()) / 1e6 / seconds, 2),
                "c_store_p50_ms": round(float(ok["latency_ms"].median()), 2) if len(ok) else None,
                "c_store_p95_ms": round(float(ok["latency_ms"].quantile(0.95)), 2) if len(ok) else None,
            }
        )
    return rows
