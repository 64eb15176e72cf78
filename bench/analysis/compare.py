"""The compare stage: targets side by side, each against a baseline target, with intervals.

Runs are grouped by target and load level (users). A group's figure is the mean over its
repetitions of the per-window values; the ratio to the baseline group at the same load
level gets a bootstrap 95% interval over repetitions and windows (bench.analysis.confidence).
A single run is a comparison of one group, so `report` and `compare` share everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict, final, overload

import numpy as np
import pandas as pd

from bench.analysis.aggregate import (
    DICOMWEB_METRICS,
    HEADLINE_METRICS,
    METRICS,
    PROTOCOL_METRICS,
    Measurement,
    RunFigures,
    Settings,
    load_server_metrics,
    measure,
    summarize,
)
from bench.analysis.bounds import BoundBy, bound_by, measured_rows
from bench.analysis.claims import ClaimSet, ClaimSetFigures, judge_all, restore_hours_per_year
from bench.analysis.confidence import (
    METHOD,
    SINGLE_RUN,
    TOO_SHORT,
    Interval,
    IntervalFigures,
    Repetition,
    mean_interval,
    ratio_interval,
)
from bench.analysis.growth import GrowthFigures, growth
from bench.analysis.hypervisor import HypervisorFigures, hypervisor_figures
from bench.analysis.runset import RunData
from bench.common.errors import UserError
from bench.results.run_record import BudgetRecord, EnvironmentRecord, EsxiRecord, HostRecord, TargetRecord
from bench.results.samples import STOW_RS, WADO_RS

CLIENT_BOUND_SHARE = 0.8  # above this share of the harness ceiling the client, not the archive, may be the limit
NO_CALIBRATION = "no calibration recorded"


@final  # final: "unmatched" in a ceiling tells it from a HarnessCeiling
class HarnessCeiling(TypedDict):
    """The lowest harness ceiling the runs of a group recorded (None: not for that unit)."""

    ceiling_instances_per_s: float | None
    ceiling_mb_per_s: float | None


@final
class UnmatchedCeiling(TypedDict):
    """Why no ceiling applies: a run's calibration did not match it."""

    unmatched: str | None  # the calibration record's note


class ClientBound(TypedDict):
    """A throughput figure against the harness ceiling (client_bound), with the ceiling when there is one."""

    calibrated: bool
    client_bound: bool | None
    note: str | None  # None only when an unmatched calibration recorded no note
    ceiling_instances_per_s: NotRequired[float | None]
    ceiling_mb_per_s: NotRequired[float | None]


class RetrievalBound(ClientBound):
    """Retrieval throughput against the harness ceiling of the method (get or move) it used."""

    method: str


class DicomwebBound(ClientBound):
    """A DICOMweb throughput (STOW-RS or WADO-RS instances/s) against the harness's own ceiling for that request."""

    operation: str


class RunGrowth(GrowthFigures):
    """The growth of one repetition of a group."""

    run: str
    repetition: int


class RatioFigures(IntervalFigures):
    """One target against the baseline at the same load, for one metric (ratios)."""

    target: str
    users: int
    metric: str
    label: str
    repetitions: int
    baseline_repetitions: int
    reading: str


class GroupFigures(TypedDict):
    """One target at one load level in the comparison (summary.json's `groups`)."""

    label: str
    target: str
    users: int
    repetitions: int
    runs: list[str]
    estimates: dict[str, IntervalFigures]
    failed_by_operation: dict[str, int]
    warnings_by_operation: dict[str, int]
    calibration: ClientBound
    retrieve_calibration: RetrievalBound | None
    dicomweb_calibration: list[DicomwebBound]
    budget: dict[str, Any] | None  # BudgetRecord's fields as run.json recorded them
    runs_on: str
    bound_by: BoundBy
    growth: list[RunGrowth]
    claims: list[ClaimSetFigures]


class Comparison(TypedDict):
    """The comparison as JSON-ready data (build_comparison): the top of summary.json for a comparison."""

    scenario: str
    baseline_target: str
    settings: dict[str, object]
    groups: list[GroupFigures]
    ratios: list[RatioFigures]
    budgets_note: str | None
    environment: list[dict[str, str | int]]
    hypervisor: NotRequired[list[HypervisorFigures]]
    evidence_notes: NotRequired[list[str]]


@dataclass
class Group:
    """One target at one load level, over its repetitions."""

    target: str
    users: int
    runs: list[RunData] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    summaries: list[RunFigures] = field(default_factory=list)

    def label(self, several_loads: bool) -> str:
        return f"{self.target} ({self.users} users)" if several_loads else self.target

    def windows(self, name: str) -> list[Repetition]:
        return [METRICS[name].windows(m) for m in self.measurements]

    def present(self, name: str) -> bool:
        return name in METRICS and any(METRICS[name].present(m) for m in self.measurements)

    def estimate(self, name: str) -> Interval | None:
        return mean_interval(self.windows(name)) if self.present(name) else None

    def mean_metrics(self) -> dict[str, float]:
        """Per-run metrics averaged over the repetitions (claims use these)."""
        names = {name for s in self.summaries for name, v in s["metrics"].items() if v is not None}
        return {
            name: float(np.mean([v for s in self.summaries if (v := s["metrics"].get(name)) is not None]))
            for name in names
        }

    def restore_metrics(self) -> dict[str, float]:
        """restore_hours_per_year from the restores of the group's fault runs (recover = "restore"), when any:
        a small restore's MB/s includes the tool's start-up, so the hours it projects err on the long side."""
        speeds = [f.restore.mb_per_s for r in self.runs for f in r.run.faults or [] if f.restore and f.restore.mb_per_s]
        return {"restore_hours_per_year": restore_hours_per_year(float(np.mean(speeds)))} if speeds else {}

    def counted(self, what: Literal["failed", "warnings"]) -> dict[str, int]:
        """Failed (or warning) requests per operation, over the measured parts of the repetitions."""
        totals: dict[str, int] = {}
        for summary in self.summaries:
            for operation, figures in summary["operations"].items():
                totals[operation] = totals.get(operation, 0) + figures.get(what, 0)
        return totals

    def users_by_type(self) -> dict[str, int]:
        types = {t for s in self.summaries for t in s["users_by_type"]}
        return {t: min(s["users_by_type"].get(t, 0) for s in self.summaries) for t in types}

    def bound_by(self, calibration_client_bound: bool | None) -> BoundBy:
        """What bounded the group's figures, from its runs' resource series over their measured windows."""
        rows = []
        for run, m in zip(self.runs, self.measurements):
            frame, _ = load_server_metrics(run.folder)
            if frame is not None:
                rows.append(measured_rows(frame, m.begin, m.end))
        cpus = (budget_of(self.runs[0]) or BudgetRecord()).cpus
        return bound_by(pd.concat(rows) if rows else None, cpus, calibration_client_bound)

    def growth(self) -> list[RunGrowth]:
        """Per repetition, how the archive's memory, open files and threads grew per hour over its measured span."""
        return [
            {
                "run": run.folder.name,
                "repetition": run.repetition,
                **growth(load_server_metrics(run.folder)[0], m.begin, m.end),
            }
            for run, m in zip(self.runs, self.measurements)
        ]

    def ceiling(self, prefix: str = "") -> HarnessCeiling | UnmatchedCeiling | None:
        """The lowest harness ceiling (`prefix`: "" for ingest, "retrieve_get_" ...) the group's runs recorded
        from a matching calibration; else {"unmatched": why} when a run's calibration did not match."""
        recorded = [r.calibration for r in self.runs if r.calibration]
        matched = [c for c in recorded if c.matched and c.ceiling(prefix, "instances_per_s")]
        if not matched:
            unmatched = [c.note for c in recorded if not c.matched]
            if unmatched:
                return {"unmatched": unmatched[0]}
            return None

        def lowest(unit: str) -> float | None:
            values = [float(value) for c in matched if (value := c.ceiling(prefix, unit))]
            return min(values) if values else None

        return {"ceiling_instances_per_s": lowest("instances_per_s"), "ceiling_mb_per_s": lowest("mb_per_s")}

    def retrieve_method(self) -> str | None:
        """ "get" or "move": how the group's workstations retrieved (None without workstations)."""
        users = self.runs[0].run.scenario.get("users") or {}
        workstation = users.get("workstation") or {}
        return workstation.get("retrieve", "move") if workstation and workstation.get("count") != 0 else None


def client_bound(
    ceiling: HarnessCeiling | UnmatchedCeiling | None, instances_per_s: float | None, mb_per_s: float | None
) -> ClientBound:
    """Whether a throughput figure is above 80% of the harness ceiling, in words and as a flag."""
    if not ceiling:
        return {"calibrated": False, "client_bound": None, "note": NO_CALIBRATION}
    if "unmatched" in ceiling:  # a ceiling from another host, profile or syntax says nothing about this run
        return {"calibrated": False, "client_bound": None, "note": ceiling["unmatched"]}
    checks = [
        (instances_per_s, ceiling["ceiling_instances_per_s"], "instances/s"),
        (mb_per_s, ceiling["ceiling_mb_per_s"], "MB/s"),
    ]
    bound = [
        f"{value:.1f} > 80% of {limit:.1f} {unit}"
        for value, limit, unit in checks
        if value is not None and limit and value > CLIENT_BOUND_SHARE * limit
    ]
    limits = ", ".join(f"{limit:g} {unit}" for _, limit, unit in checks if limit)
    note = f"CLIENT-BOUND ({'; '.join(bound)})" if bound else f"below 80% of the harness ceiling ({limits})"
    return {"calibrated": True, "client_bound": bool(bound), "note": note, **ceiling}


def budget_of(run: RunData) -> BudgetRecord | None:
    """run.json's target.budget (cpus, memory_bytes, enforced_by); None for runs from before budgets."""
    return run.run.target.budget if run.run.target else None


def budget_text(budget: BudgetRecord | dict[str, Any] | None) -> str:
    """The budget in words; `budget` as run.json has it, or as summary.json keeps it (a dict)."""
    budget = BudgetRecord.model_validate(budget) if isinstance(budget, dict) else budget
    if not budget or budget.cpus is None:
        return "no budget recorded"
    size = f", {budget.memory_bytes / 2**30:.1f} GiB" if budget.memory_bytes else ""
    cpus = int(budget.cpus) if float(budget.cpus).is_integer() else budget.cpus
    return f"{cpus} CPU{'s' if cpus != 1 else ''}{size} ({budget.enforced_by})"


def _budget_dict(budget: BudgetRecord | None) -> dict[str, Any] | None:
    """The budget as summary.json keeps it (the fields run.json recorded)."""
    return budget.model_dump(exclude_unset=True) if budget else None


def check_budgets(runs: list[RunData], allow_unequal: bool) -> str | None:
    """None when every run had the same CPUs and memory; else a one-line error, or with `allow_unequal` the note."""
    seen: dict[tuple[float | None, int | None], list[str]] = {}
    for run in runs:
        budget = budget_of(run) or BudgetRecord()
        key = (budget.cpus, budget.memory_bytes)
        names = seen.setdefault(key, [])
        if run.target not in names:
            names.append(run.target)
    if len(seen) < 2:
        return None
    listed = "; ".join(
        f"{', '.join(names)}: {budget_text(budget_of(next(r for r in runs if r.target == names[0])))}"
        for names in seen.values()
    )
    if not allow_unequal:
        raise UserError(
            f"the runs' budgets differ ({listed}): a ratio would mix the target with its CPUs and memory; "
            "give every target the same [target] cpus and memory_mib, or pass --allow-unequal-budgets"
        )
    return f"budgets differ ({listed}): compared anyway (--allow-unequal-budgets)"


def group_runs(runs: list[RunData], settings: Settings) -> list[Group]:
    groups: dict[tuple[str, int], Group] = {}
    for run in sorted(runs, key=lambda r: (r.target, r.users, r.repetition)):
        group = groups.setdefault((run.target, run.users), Group(run.target, run.users))
        group.runs.append(run)
        group.measurements.append(measure(run.samples, settings, run.stop_at))
        group.summaries.append(summarize(run.samples, settings, run.stop_at))
    return list(groups.values())


def _fmt(value: object, unit: str = "") -> str:
    return "not recorded" if value in (None, "") else f"{value}{unit}"


def _container_text(container: str | None) -> str:
    return f" in a {container} container" if container and container not in ("none", "unknown") else ""


def _hypervisor_evidence(target: TargetRecord, container: str | None) -> str:
    """The container layer, the declared hypervisor and how the label was found, when run.json has them."""
    parts = [_container_text(container).strip()] if _container_text(container) else []
    parts += [f"declared {target.declared_hypervisor}"] if target.declared_hypervisor else []
    parts += [target.hypervisor_source] if target.hypervisor_source else []
    return f" ({'; '.join(parts)})" if parts else ""


def runs_on(run: RunData) -> str:
    """For a native baseline that is itself a guest: 'itself a kvm guest in a docker container'; else ""."""
    target = run.run.target
    if target is None or target.kind != "native" or target.hypervisor in (None, "none", "unknown"):
        return ""
    return f"itself a {target.hypervisor} guest{_container_text(target.container)}"


@overload
def _seen(target: TargetRecord, name: Literal["hypervisor", "container"]) -> str | None: ...
@overload
def _seen(target: TargetRecord, name: Literal["vcpus", "memory_bytes"]) -> int | None: ...
def _seen(target: TargetRecord, name: str) -> str | int | None:
    """A fact of the target as run.json has it, else as the archive reported it (target.environment): both
    records name it alike."""
    value: str | int | None = getattr(target, name)
    if value is not None:
        return value
    seen: str | int | None = getattr(target.environment or EnvironmentRecord(), name)
    return seen


def _hypervisor_text(run: RunData, target: TargetRecord, host: HostRecord) -> str:
    detected = run.hypervisor or _seen(target, "hypervisor")
    if detected:
        return str(detected) + _hypervisor_evidence(target, _seen(target, "container"))
    if target.kind == "native":
        vendor = host.dmi_sys_vendor or "vendor unknown"
        return f"none; the host itself is a VM ({vendor})" if host.cpu_hypervisor_flag else "none (bare metal)"
    return "not recorded"


def environment(run: RunData) -> dict[str, str | int]:
    """What the target ran on: run.json `target` (with `target.environment`, the archive's own report) and `host`."""
    target, host = run.run.target or TargetRecord(kind=""), run.run.host or HostRecord()
    memory = _seen(target, "memory_bytes")
    return {
        "target": run.target,
        "run": run.folder.name,
        "repetition": run.repetition,
        "users": run.users,
        "kind": _fmt(target.kind),
        "hypervisor": _hypervisor_text(run, target, host),
        "vcpus": _fmt(_seen(target, "vcpus") or (host.cpus if target.kind == "native" else None)),
        "memory": _fmt(round(memory / 2**30, 1) if memory else None, " GiB"),
        "disk": _fmt(target.disk),
        "network": _fmt(target.network),
        "fsync": _fmt(target.fsync),
        "max_pdu": _fmt(target.max_pdu),
        "budget": budget_text(target.budget),
        "server": _fmt(target.server),
        "host": f"{host.hostname or '?'}: {host.cpu_model or '?'}, {host.cpus or '?'} CPUs",
        **({"esxi": esxi_text(target.esxi)} if target.esxi else {}),
    }


def esxi_text(esxi: EsxiRecord) -> str:
    """An esxi target's host and VM in one line, with how its certificate was trusted."""
    vm = esxi.vm
    return (
        f"{esxi.product or '?'} ({'govmomi simulator, ' if esxi.simulator else ''}{esxi.api_type or '?'} at "
        f"{esxi.server}); host {esxi.esxi_host or '?'}: {esxi.host_cpu_model or '?'}, {esxi.host_cpu_sockets or '?'} "
        f"sockets, {esxi.host_cpu_cores or '?'} cores; VM {vm.hardware_version if vm else '?'}, "
        f"{vm.memory_reservation_mib if vm else '?'} MiB reserved; datastore {esxi.datastore} ({esxi.datastore_type}); "
        f"TLS {esxi.tls}"
    )


def _baseline_group(groups: list[Group], baseline: str, users: int) -> Group | None:
    return next((g for g in groups if g.target == baseline and g.users == users), None)


def ratios(groups: list[Group], baseline: str) -> list[RatioFigures]:
    """Every non-baseline group against the baseline at the same load, per headline metric."""
    rows: list[RatioFigures] = []
    for group in groups:
        base = _baseline_group(groups, baseline, group.users)
        if group.target == baseline or base is None:
            continue
        for name in HEADLINE_METRICS:
            if not (group.present(name) and base.present(name)):
                continue
            interval = ratio_interval(group.windows(name), base.windows(name))
            if interval is None:
                continue
            spec = METRICS[name]
            low, high = interval.low, interval.high
            worse = better = False
            if low is not None and high is not None:  # interval.decided, spelt out for the type checker
                worse = high < 1 if spec.higher_is_better else low > 1
                better = low > 1 if spec.higher_is_better else high < 1
            rows.append(
                {
                    "target": group.target,
                    "users": group.users,
                    "metric": name,
                    "label": spec.label,
                    **interval.as_dict(),
                    "repetitions": len(group.runs),
                    "baseline_repetitions": len(base.runs),
                    "reading": reading(interval, worse, better),
                }
            )
    return rows


def reading(interval: Interval, worse: bool, better: bool) -> str:
    if not interval.decided:
        return "cannot tell (too short for an interval)"
    return "worse" if worse else "better" if better else "no clear difference"


def evidence_notes(data: Comparison) -> list[str]:
    """One line per group, and per target's ratios, whose intervals rest on less than repetitions."""
    notes: list[str] = []
    for group in data["groups"]:
        notes += _weakest_note(group["label"], list(group["estimates"].values()))
    for target in dict.fromkeys(r["target"] for r in data["ratios"]):
        rows = [r for r in data["ratios"] if r["target"] == target]
        notes += _weakest_note(f"ratios of {target} to {data['baseline_target']}", rows)
    return notes


def _weakest_note(what: str, estimates: Sequence[IntervalFigures]) -> list[str]:
    kinds = {e.get("evidence_kind") for e in estimates}
    for kind in (TOO_SHORT, SINGLE_RUN):
        if kind in kinds:
            text = next(e["evidence"] for e in estimates if e.get("evidence_kind") == kind)
            return [f"{what}: {text}"]
    return []


def _value(estimates: dict[str, IntervalFigures], name: str) -> float | None:
    """The value of the estimate of metric `name`; None when there is none."""
    estimate = estimates.get(name)
    return estimate["value"] if estimate else None


def _group_record(group: Group, several_loads: bool, claim_sets: list[ClaimSet]) -> GroupFigures:
    # The side-by-side figures only when the group spoke DICOMweb: intervals cost a bootstrap each
    sides = PROTOCOL_METRICS if any(group.present(name) for name in DICOMWEB_METRICS) else []
    intervals = {name: group.estimate(name) for name in dict.fromkeys([*HEADLINE_METRICS, *sides])}
    estimates = {k: v.as_dict(3) for k, v in intervals.items() if v is not None}
    ingest = _value(estimates, "ingest_instances_per_s")
    mb = _value(estimates, "ingest_mb_per_s")
    calibration = client_bound(group.ceiling(), ingest, mb)
    retrieval = retrieval_bound(group, estimates)
    dicomweb = dicomweb_bounds(group, estimates)
    client_bound_somewhere = [calibration["client_bound"], retrieval["client_bound"] if retrieval else None]
    client_bound_somewhere += [verdict["client_bound"] for verdict in dicomweb]
    return {
        "label": group.label(several_loads),
        "target": group.target,
        "users": group.users,
        "repetitions": len(group.runs),
        "runs": [r.folder.name for r in group.runs],
        "estimates": estimates,
        "failed_by_operation": group.counted("failed"),
        "warnings_by_operation": group.counted("warnings"),
        "calibration": calibration,
        "retrieve_calibration": retrieval,
        "dicomweb_calibration": dicomweb,
        "budget": _budget_dict(budget_of(group.runs[0])),
        "runs_on": runs_on(group.runs[0]),
        "bound_by": group.bound_by(True if any(client_bound_somewhere) else calibration["client_bound"]),
        "growth": group.growth(),
        "claims": judge_all(claim_sets, group.mean_metrics() | group.restore_metrics(), group.users_by_type()),
    }


def retrieval_bound(group: Group, estimates: dict[str, IntervalFigures]) -> RetrievalBound | None:
    """Retrieval throughput against the harness's C-GET or C-MOVE ceiling, as ingest is judged; None
    when the group retrieved nothing."""
    retrieved = _value(estimates, "retrieve_instances_per_s")
    method = group.retrieve_method()
    if not retrieved or method is None:
        return None
    verdict = client_bound(group.ceiling(f"retrieve_{method}_"), retrieved, _value(estimates, "retrieve_mb_per_s"))
    return {**verdict, "method": method, "note": f"retrieval (C-{method.upper()}): {verdict['note']}"}


def dicomweb_bounds(group: Group, estimates: dict[str, IntervalFigures]) -> list[DicomwebBound]:
    """STOW-RS and WADO-RS throughput against the harness's own STOW-RS and WADO-RS ceilings, as C-STORE's is
    judged: one verdict per DICOMweb request the group measured."""
    verdicts: list[DicomwebBound] = []
    for prefix, operation in (("stow", STOW_RS), ("wado", WADO_RS)):
        rate = _value(estimates, f"{prefix}_instances_per_s")
        if rate:
            verdict = client_bound(group.ceiling(f"{prefix}_"), rate, _value(estimates, f"{prefix}_mb_per_s"))
            verdicts.append({**verdict, "operation": operation, "note": f"{operation}: {verdict['note']}"})
    return verdicts


def check_baseline(groups: list[Group], baseline: str) -> None:
    targets = sorted({g.target for g in groups})
    if len(targets) > 1 and baseline not in targets:
        raise UserError(
            f"baseline target {baseline!r} is not among the runs' targets ({', '.join(targets)}); "
            "pick one with --baseline-target"
        )


def build_comparison(
    runs: list[RunData],
    settings: Settings,
    baseline: str,
    claim_sets: list[ClaimSet],
    allow_unequal_budgets: bool = False,
) -> tuple[Comparison, list[Group]]:
    """The comparison as JSON-ready data, plus the groups (for figures)."""
    budgets_note = check_budgets(runs, allow_unequal_budgets)
    groups = group_runs(runs, settings)
    check_baseline(groups, baseline)
    several_loads = len({g.users for g in groups}) > 1
    data: Comparison = {
        "scenario": runs[0].scenario,
        "baseline_target": baseline,
        "settings": settings.describe() | {"bootstrap": METHOD},
        "groups": [_group_record(g, several_loads, claim_sets) for g in groups],
        "ratios": ratios(groups, baseline),
        "budgets_note": budgets_note,
        "environment": [environment(r) for g in groups for r in g.runs],
    }
    if hypervisor := [f for g in groups for r in g.runs if (f := hypervisor_figures(r))]:
        data["hypervisor"] = hypervisor
    data["evidence_notes"] = evidence_notes(data)
    return data, groups
