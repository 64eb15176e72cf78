"""What the report reads from a run's run.json, and the summary.json it writes: each field named here once.

run.json and summary.json are becoming typed records (bench/results); these small functions are the only
places the report names their top-level fields, so switching to the records is an edit of this file.
The fields of each fault (run.json["faults"][i]) are read in bench/report/faults.py, which words them.
"""

from __future__ import annotations

from bench.analysis.runset import RunData


def run_id(run: RunData) -> str | None:
    return run.run.get("run_id")


def run_status(run: RunData) -> str:
    return str(run.run.get("status", ""))


def stop_detail(run: RunData) -> str | None:
    """Why a run stopped early (the disk guard's words), when it did."""
    return (run.run.get("disk") or {}).get("stop_detail")


def recycling(run: RunData) -> dict | None:
    """run.json["capacity"] when the archive recycled studies at its capacity, else None."""
    capacity = run.run.get("capacity") or {}
    if capacity.get("at_capacity") != "recycle":
        return None
    return {
        "studies": capacity.get("recycled_studies", 0),
        "instances": capacity.get("recycled_instances", 0),
        "bytes": capacity.get("recycled_bytes", 0),
        "capacity_bytes": capacity.get("capacity_bytes", 0),
    }


def verification(run: RunData) -> dict | None:
    """The verification made with the run (pacsbench run --verify, or pacsbench verify RUN)."""
    return run.run.get("verify")


def later_verifications(run: RunData) -> list[dict]:
    """Verifications made after the run (pacsbench verify RUN, again), oldest first."""
    return run.run.get("verify_later") or []


def faults(run: RunData) -> list[dict]:
    """The faults the run's scenario asked for, injected or not."""
    return run.run.get("faults") or []


def run_record(run: RunData, summary: dict, data: dict, integrity: str, notes: list[str]) -> dict:
    """summary.json of one run: its summary (bench.analysis.aggregate), its estimates and verdicts, its words."""
    group = data["groups"][0]
    record = {
        "run_id": run_id(run),
        "scenario": run.scenario,
        "target": run.target,
        **summary,
        "estimates": group["estimates"],
        "calibration": group["calibration"],
        "retrieve_calibration": group["retrieve_calibration"],
        "budget": group["budget"],
        "bound_by": group["bound_by"],
        "growth": group["growth"][0],
        "claims": group["claims"],
        "environment": data["environment"][0],
        "integrity": integrity,
        "status": run.run.get("status"),
        "notes": notes,
    }
    if "faults" in run.run:  # absent, not empty, for a scenario without faults
        record["faults"] = run.run["faults"]
    return record


def comparison_record(data: dict, created: str) -> dict:
    """summary.json of a comparison: the comparison (bench.analysis.compare) as built, and when."""
    return data | {"created": created}
