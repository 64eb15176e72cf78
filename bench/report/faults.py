"""The faults section: each fault a run's scenario injected, its recovery and what it lost, in words.

This module is the one place the report reads the fields of a fault (run.json["faults"][i], written by
bench.runs.faults).
"""

from __future__ import annotations

from bench.analysis.compare import Group
from bench.analysis.runset import RunData
from bench.report import facts
from bench.report.model import Note, Section, Table
from bench.report.text import num
from bench.results.run_record import FaultRecord


def fault_marks(groups: list[Group]) -> list[tuple[float, str]]:
    """Each injected fault as (seconds since its run's first request, action): the timeline's origin."""
    return [
        (fault.unix_time - float(r.samples["start"].min()), fault.action)
        for g in groups
        for r in g.runs
        for fault in facts.faults(r)
        if fault.happened
    ]


_FAULT_HEADERS = [
    "run",
    "action",
    "at (s)",
    "duration (s)",
    "recovery (s)",
    "recovered by",
    "archive start-up (s)",
    "failed during outage",
    "acknowledged before",
    "lost",
    "changed",
]


def _failed_text(fault: FaultRecord) -> str:
    by_status = ", ".join(f"{count} {status}" for status, count in fault.failed_by_status.items())
    return f"{fault.failed_during_outage:,}" + (f" ({by_status})" if by_status else "")


def _action_text(fault: FaultRecord) -> str:
    if fault.action == "backup" and fault.happened:
        b = fault.backup
        return f"backup ({b.instances:,} instances, {b.bytes / 1e6:.1f} MB, {b.seconds:g} s, {b.mb_per_s:g} MB/s)"
    if fault.recover == "restore":
        r = fault.restore
        return (
            f"{fault.action}, data lost and restored from the backup {fault.recovery_point_seconds:g} s "
            f"before ({r.seconds:g} s, {r.mb_per_s:g} MB/s)"
        )
    return fault.action


def _lost_text(fault: FaultRecord) -> str:
    if fault.recover != "restore":
        return f"{fault.lost:,}"
    return (
        f"{fault.lost:,} of those before the backup; {fault.lost_after_backup:,} of "
        f"{fault.acknowledged_after_backup:,} after it (the recovery point)"
    )


def _fault_row(run: RunData, fault: FaultRecord) -> list[str]:
    if not fault.happened:
        return [
            run.folder.name,
            fault.action,
            num(fault.at, 2),
            num(fault.duration, 2),
            f"not injected: {fault.error or ''}",
            *[""] * 6,
        ]
    if fault.action == "backup":
        return [run.folder.name, _action_text(fault), num(fault.into_load_seconds, 2), "", *[""] * 7]
    return [
        run.folder.name,
        _action_text(fault),
        num(fault.into_load_seconds, 2),
        num(fault.duration, 2),
        num(fault.recovery_seconds, 2) if fault.recovery_seconds is not None else "never",
        fault.recovery_by or "",
        num(fault.startup_seconds, 2) if fault.startup_seconds is not None else "",
        _failed_text(fault),
        f"{fault.acknowledged_before:,}",
        _lost_text(fault),
        f"{fault.changed:,}",
    ]


def _fault_rows(groups: list[Group]) -> list[list[str]]:
    """One row per fault of every run (run.json["faults"])."""
    return [_fault_row(r, fault) for g in groups for r in g.runs for fault in facts.faults(r)]


_FAULT_NOTE = (
    "Recovery: from the fault to the answer of the first successful C-STORE sent after it (C-ECHO when "
    "no C-STORE). Failed during outage: requests that ended between the fault and recovery without success "
    "(no answer, or a failure status). "
    "Lost: instances acknowledged before the fault that a C-GET after the load did not return "
    "(changed: returned with other bytes). A kill keeps the host's page cache: it tests durability "
    "against a process crash, not a power loss."
)


def faults_section(groups: list[Group]) -> Section | None:
    """The fault table, for runs whose scenario injected faults."""
    rows = _fault_rows(groups)
    return Section("Faults", [Table(_FAULT_HEADERS, rows), Note(_FAULT_NOTE)]) if rows else None
