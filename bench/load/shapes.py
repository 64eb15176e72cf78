"""Load shapes: steps of user counts or a linear ramp (as a locust LoadTestShape), and per-step figures.

A step run (the ingest sweep: 1, 2, 4, 8, 16 associations) notes when each step began;
`step_figures` then cuts the run's samples at those times, so one run gives throughput
against associations, computed from sample rows like every other figure.
"""

from __future__ import annotations

import math
import time

import pandas as pd

from bench.results.samples import done_mask
from bench.scenario.load import LoadSpec

STEP_SETTLE_SHARE = 0.2  # the first 20% of each step (users starting, queues filling) is not measured


def planned_users(load: LoadSpec, elapsed: float) -> int | None:
    """Users wanted `elapsed` seconds into a steps or ramp run; None once it is over."""
    if elapsed >= load.duration:
        return None
    if load.shape == "steps":
        index = int(elapsed // load.step_seconds)
        return load.steps[index] if index < len(load.steps) else None
    return max(1, math.ceil(load.users * min(1.0, elapsed / load.ramp_seconds)))


def make_shape(load: LoadSpec):
    """The locust LoadTestShape for a steps or ramp scenario (None: constant users).

    Imports locust, so only the load stage calls it (locust patches the process for gevent).
    A steps shape notes when each step began, for step_figures.
    """
    if load.shape == "constant":
        return None
    from locust import LoadTestShape

    spawn_rate = load.spawn_rate or load.users

    class ScenarioShape(LoadTestShape):
        def __init__(self):
            super().__init__()
            self.began: list[dict] = []  # steps: {"users": n, "start": unix time} per step, as it began

        def tick(self):
            elapsed = self.get_run_time()
            users = planned_users(load, elapsed)
            if users is not None and load.shape == "steps" and len(self.began) <= elapsed // load.step_seconds:
                self.began.append({"users": users, "start": time.time()})
            return None if users is None else (users, spawn_rate)

    return ScenarioShape()


def step_figures(samples: pd.DataFrame, steps: list[dict], run_end: float) -> list[dict]:
    """Acknowledged C-STORE throughput and latency per step (its first 20% left out)."""
    rows = []
    ends = [s["start"] for s in steps[1:]] + [run_end]
    done = samples["start"] + samples["latency_ms"] / 1000.0
    stores = (samples["operation"] == "C-STORE") & done_mask(samples["status"])
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
