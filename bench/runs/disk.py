"""Disk space of a run: what the scenario can store against what is free, and a watch that stops the run in time.

A benchmark that stores as fast as the disk allows will meet a full disk. Before the run, `plan_disk` holds what the
scenario can store (modalities at their pace, or flat out at the calibrated ceiling) against the free space of the run
folder's disk and of the archive's data disk, and refuses in one line, unless the scenario bounds the archive ([target]
capacity, at_capacity; a guest's data disk bounds its archive: a warning). During the load, `DiskWatch` (the engine's
stop check) ends the run cleanly when a watched disk falls to the reserve kept for the harness's own files, when a
record file could not be written, or (at_capacity = "stop") at the archive's first A700.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.errors import UserError
from bench.results.run_record import CalibrationRecord, CapacityRecord, DiskRecord
from bench.scenario.file import Scenario
from bench.scenario.targets import TargetSpec
from bench.scenario.users import ModalitySpec, role_of

RESERVE_STATUS = "stopped: disk reserve reached"
CAPACITY_STATUS = "stopped: archive capacity reached"
# Without a calibration in the state folder: flat-out modalities are assumed to store this much per
# load process. The reference archive stores dsa-unit studies durably at about 1 GB/s on a
# fast NVMe disk (issue 16): high on purpose, the check errs towards refusing.
ASSUMED_MB_PER_S = 1000.0
ROW_BYTES = 600  # samples.csv and sent.csv per stored instance, with room to spare
OTHER_REQUESTS_PER_S = 2000  # workstations, queries and echoes: samples.csv rows per second at most
OUT_OF_RESOURCES = 0xA700  # the archive's answer at its capacity (reject)
FS_OVERHEAD = 0.05  # of a default capacity, left for file system metadata and the index (and its WAL)
ARCHIVE_HERE = ("native", "orthanc", "dcmtk")  # their data goes into the run folder
GUEST_KINDS = ("kvm", "tcg")


def gb(size: float) -> str:
    return f"{size / 1e9:.1f} GB"


def existing(path: Path) -> Path:
    """`path` or its nearest existing parent (a results folder not made yet)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on `path`'s file system."""
    return shutil.disk_usage(existing(path)).free


def used_bytes(path: Path) -> int:
    return shutil.disk_usage(existing(path)).used


def store_rate(
    scenario: Scenario, pools: dict[str, dict], calibration: CalibrationRecord | None, processes: int
) -> tuple[float, str]:
    """Bytes per second the modality groups can store together, and on what basis (said in the refusal).

    `pools` holds each pool's description (StudyPool.describe) by profile name."""
    rates = [
        group_rate(scenario, group, pools[group.profile or scenario.studies.profile], calibration, processes)
        for group in scenario.users.modality_groups().values()
        if group.count != 0
    ]
    if not rates:
        return 0.0, "no modality users"
    return sum(r for r, _ in rates), "; ".join(basis for _, basis in rates)


def group_rate(
    scenario: Scenario, modality: ModalitySpec, pool: dict, calibration: CalibrationRecord | None, processes: int
) -> tuple[float, str]:
    """Bytes per second one modality group can store, and on what basis; a group that sends a set number of
    `studies` stores at most those over the run."""
    users = modality.count if modality.count is not None else scenario.load.users  # a weighted share: at most all
    rate, basis = paced_rate(modality, users, pool, calibration, processes)
    if modality.studies is not None:
        study = pool["bytes"] / max(pool["studies"], 1)
        bounded = users * modality.studies * study / scenario.load.duration
        if bounded < rate:
            return bounded, f"{users} modalities sending {modality.studies} studies each"
    return rate, basis


def paced_rate(
    modality: ModalitySpec, users: int, pool: dict, calibration: CalibrationRecord | None, processes: int
) -> tuple[float, str]:
    """Bytes per second `users` modalities store at their pace (flat out: the calibrated or assumed ceiling)."""
    if modality.studies_per_hour:
        study = pool["bytes"] / max(pool["studies"], 1)
        return (
            users * modality.studies_per_hour / 3600 * study,
            f"{users} modalities at {modality.studies_per_hour:g} studies/h",
        )
    if modality.instances_per_s:
        instance = pool["bytes"] / max(pool["instances"], 1)
        return (
            users * modality.instances_per_s * instance,
            f"{users} modalities at {modality.instances_per_s:g} instances/s",
        )
    if calibration and calibration.ceiling_mb_per_s:  # a matching calibration (bench.load.calibrate)
        rate = calibration.ceiling_mb_per_s
        return rate * 1e6, f"flat-out modalities at the calibrated ceiling of {rate:g} MB/s"
    rate = ASSUMED_MB_PER_S * processes
    return rate * 1e6, (
        f"flat-out modalities at an assumed {rate:g} MB/s (no matching calibration in the state "
        "folder; `pacsbench calibrate` measures the harness's ceiling)"
    )


def _records_bytes(scenario: Scenario, archive_bytes: float, pool: dict) -> int:
    """samples.csv, sent.csv and the rest of the harness's rows for this much stored."""
    instances = archive_bytes / max(pool["bytes"] / max(pool["instances"], 1), 1.0)
    others = any(role_of(name) != "modality" for name in scenario.users.groups())
    return int(instances * ROW_BYTES + (OTHER_REQUESTS_PER_S * ROW_BYTES * scenario.load.duration if others else 0))


def plan_disk(
    scenario: Scenario,
    target: TargetSpec,
    pools: dict[str, dict],
    calibration: CalibrationRecord | None,
    processes: int,
    results_root: Path,
) -> tuple[TargetSpec, DiskRecord]:
    """The target as it will run (a native archive's capacity resolved) and run.json["disk"]; UserError: too little.

    `pools`: each pool's description by profile name; the [studies] profile's one is prefilled."""
    reserve = scenario.run.disk_reserve
    pool = pools[scenario.studies.profile]
    rate, basis = store_rate(scenario, pools, calibration, processes)
    prefill = scenario.studies.prefill * pool["bytes"] / max(pool["studies"], 1)
    archive = rate * scenario.load.duration + prefill
    records = _records_bytes(scenario, archive, pool)
    free = free_bytes(results_root)
    where = existing(results_root)
    can_store = f"{scenario.name} can store {gb(archive)} ({basis}, for {scenario.load.duration:g} s)"
    plan = DiskRecord(
        reserve_bytes=reserve,
        results_free_bytes=free,
        store_rate_bytes_per_s=round(rate),
        rate_basis=basis,
        archive_need_bytes=round(archive),
        records_need_bytes=records,
    )
    if target.kind == "native" and target.bounded:
        capacity = target.capacity or default_capacity(free, reserve, records)
        if capacity <= 0 or capacity + reserve + records > free:
            raise UserError(
                f"archive capacity {gb(max(capacity, 0))} plus the {gb(reserve)} disk reserve and "
                f"{gb(records)} of records needs {gb(max(capacity, 0) + reserve + records)}; "
                f"{where} has {gb(free)} free"
            )
        plan.capacity_bytes = capacity
        return target.model_copy(update={"capacity": capacity}), plan
    on_run_disk = archive if target.kind in ARCHIVE_HERE else 0
    if target.kind in GUEST_KINDS:
        # The guest's data disk bounds its archive (full, it refuses stores); its image grows in the
        # run folder up to that size as the guest writes.
        data_disk = target.data_disk_gib << 30
        on_run_disk = min(archive, data_disk)
        if archive > data_disk:
            plan.warning = (
                f"{can_store}, more than the guest's {gb(data_disk)} data disk (data_disk_gib): "
                "its archive refuses stores once that is full"
            )
    needed = on_run_disk + records + reserve
    if needed > free:
        bound = "; or bound a native archive: [target] capacity, at_capacity" if target.kind == "native" else ""
        raise UserError(
            f"{can_store}, plus {gb(records)} of records and the {gb(reserve)} disk reserve: needs "
            f"{gb(needed)}, {where} has {gb(free)} free: shorten the run{bound}"
        )
    if target.kind == "native":
        # Unbounded in the scenario, bounded anyway: a disk that fills faster than planned stops the run.
        capacity = default_capacity(free, reserve, records)
        plan.capacity_bytes = capacity
        return target.model_copy(update={"capacity": capacity}), plan
    return target, plan


def default_capacity(free: int, reserve: int, records: int) -> int:
    """A native archive's capacity when the scenario gives none: what the disk holds beyond the reserve."""
    return int((free - reserve - records) * (1 - FS_OVERHEAD))


@dataclass
class DiskWatch:
    """The run's stop check, once a second during the load: a reason to stop (a run.json status), or None."""

    paths: list[Path]
    reserve: int
    records: object  # bench.results.samples.RunRecords: its write_error and its statuses
    stop_at_capacity: bool = False
    # Stop this many seconds before the reserve at the last second's pace (stopping still writes);
    # 0 when the archive keeps itself within its capacity (reject, recycle): the reserve is the floor.
    margin_seconds: float = 2.0
    detail: str = ""
    lowest_free: dict[str, int] = field(default_factory=dict)
    highest_used: dict[str, int] = field(default_factory=dict)

    def __call__(self) -> str | None:
        if self.records.write_error:
            self.detail = f"cannot write {self.records.write_error}"
            return RESERVE_STATUS
        for path in self.paths:
            free, key = free_bytes(path), str(path)
            drop = max(0, self.lowest_free.get(key, free) - free)
            self.lowest_free[key] = min(free, self.lowest_free.get(key, free))
            self.highest_used[key] = max(used_bytes(path), self.highest_used.get(key, 0))
            if free <= self.reserve + self.margin_seconds * drop:
                self.detail = f"{path}: {gb(free)} free, reserve {gb(self.reserve)}"
                return RESERVE_STATUS
        if self.stop_at_capacity and self.records.statuses.get(OUT_OF_RESOURCES):
            self.detail = "the archive answered A700 (out of resources) at its capacity"
            return CAPACITY_STATUS
        return None

    def describe(self) -> dict:
        return {
            "lowest_free_bytes": self.lowest_free,
            "highest_used_bytes": self.highest_used,
            **({"stop_detail": self.detail} if self.detail else {}),
        }


def watched_paths(target: TargetSpec, run_dir: Path) -> list[Path]:
    """The run folder, and a native archive's data folder when it is on another file system."""
    paths = [run_dir]
    archive = run_dir / "archive"
    if target.kind == "native" and archive.exists() and archive.stat().st_dev != run_dir.stat().st_dev:
        paths.append(archive)
    return paths


def capacity_figures(run_dir: Path, target: TargetSpec) -> CapacityRecord | None:
    """run.json["capacity"]: a bounded native archive's capacity, use and recycled totals at the end (its /status)."""
    try:
        status = json.loads((run_dir / "server_status.json").read_text())
    except (OSError, ValueError):
        return None
    capacity = status.get("capacity")
    if target.kind != "native" or not capacity:
        return None
    # Only the figures the record names: the archive's /status may say more (another release).
    return CapacityRecord(
        capacity_bytes=capacity.get("capacity_bytes"),
        used_bytes=capacity.get("used_bytes"),
        recycled_studies=capacity.get("recycled_studies", 0),
        recycled_instances=capacity.get("recycled_instances", 0),
        recycled_bytes=capacity.get("recycled_bytes", 0),
        archive_at_capacity=capacity.get("at_capacity"),
        at_capacity=target.at_capacity,
    )
