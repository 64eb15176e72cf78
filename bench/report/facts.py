"""What the report reads from a run's run.json, and the summary.json it writes: each field named here once.

run.json and summary.json are typed records (bench.results); these small functions are the only places
the report names run.json's top-level fields.
The fields of each fault (run.json["faults"][i]) are read in bench/report/faults.py, which words them.
"""

from __future__ import annotations

from bench.analysis.runset import RunData
from bench.results.run_record import CapacityRecord, FaultRecord, VerifyRecord


def run_id(run: RunData) -> str | None:
    return run.run.run_id


def run_status(run: RunData) -> str:
    return run.run.status


def stop_detail(run: RunData) -> str | None:
    """Why a run stopped early (the disk guard's words), when it did."""
    return run.run.disk.stop_detail if run.run.disk else None


def recycling(run: RunData) -> CapacityRecord | None:
    """run.json's capacity when the archive recycled studies at its capacity, else None."""
    capacity = run.run.capacity
    return capacity if capacity and capacity.at_capacity == "recycle" else None


def verification(run: RunData) -> VerifyRecord | None:
    """The verification made with the run (pacsbench run --verify, or pacsbench verify RUN)."""
    return run.run.verify


def later_verifications(run: RunData) -> list[VerifyRecord]:
    """Verifications made after the run (pacsbench verify RUN, again), oldest first."""
    return run.run.verify_later or []


def faults(run: RunData) -> list[FaultRecord]:
    """The faults the run's scenario asked for, injected or not."""
    return run.run.faults or []


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
        "dicomweb_calibration": group["dicomweb_calibration"],
        "budget": group["budget"],
        "bound_by": group["bound_by"],
        "growth": group["growth"][0],
        "claims": group["claims"],
        "environment": data["environment"][0],
        **({"hypervisor": data["hypervisor"][0]} if data.get("hypervisor") else {}),
        "integrity": integrity,
        "status": run_status(run),
        "notes": notes,
    }
    if run.run.faults is not None:  # absent, not empty, for a scenario without faults
        record["faults"] = [fault.model_dump(exclude_unset=True) for fault in run.run.faults]
    return record


def comparison_record(data: dict, created: str) -> dict:
    """summary.json of a comparison: the comparison (bench.analysis.compare) as built, and when."""
    return data | {"created": created}
