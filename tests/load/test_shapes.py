"""Load shapes: what user count each moment of a run asks for, and figures per step from samples."""

import pandas as pd

from bench.load.shapes import planned_users, step_figures
from bench.scenario.load import LoadSpec


def test_steps_hold_each_count_for_its_time_then_end():
    load = LoadSpec(shape="steps", steps=[1, 2, 4], step_seconds=10)
    assert load.duration == 30 and load.users == 4
    assert [planned_users(load, t) for t in (0, 9.9, 10.1, 25, 30.1)] == [1, 1, 2, 4, None]


def test_ramp_climbs_from_one_user_then_holds():
    load = LoadSpec(shape="ramp", users=10, ramp_seconds=20, duration=30)
    assert [planned_users(load, t) for t in (0, 10, 19.9, 25, 30)] == [1, 5, 10, 10, None]


def test_step_figures_count_acknowledged_stores_after_each_steps_settling():
    rows = []
    for second in range(20):  # step 1 (t 0-10): 1 store/s of 1 MB; step 2 (t 10-20): 3 stores/s
        for n in range(1 if second < 10 else 3):
            rows.append(
                {
                    "start": second + n * 0.1,
                    "latency_ms": 50.0,
                    "operation": "C-STORE",
                    "status": 0,
                    "frames": 2,
                    "bytes": 1_000_000,
                }
            )
    rows.append(
        {"start": 15.0, "latency_ms": 5.0, "operation": "C-STORE", "status": 0xA700, "frames": 2, "bytes": 1_000_000}
    )
    figures = step_figures(pd.DataFrame(rows), [{"users": 1, "start": 0.0}, {"users": 2, "start": 10.0}], 20.0)
    assert [f["users"] for f in figures] == [1, 2]
    assert [f["instances_per_s"] for f in figures] == [1.0, 3.0]  # the failed store does not count
    assert figures[1]["mb_per_s"] == 3.0 and figures[1]["frames_per_s"] == 6.0 and figures[1]["c_store_p50_ms"] == 50.0


def test_importing_the_shapes_leaves_the_process_unpatched():
    import socket

    import gevent.monkey

    assert not gevent.monkey.is_module_patched("socket") and socket.socket.__module__ == "socket"
