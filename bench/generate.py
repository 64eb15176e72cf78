"""Generate synthetic DSA studies: plan (sizes, keys, UIDs) from a seed, synthesize, write.

Everything is a pure function of (profile, seed, study index), so the same command makes
byte-identical files. Each study is written into a hidden partial folder and renamed into
place when complete: an interrupted run leaves no half study behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset
from tqdm import tqdm

from bench.errors import UserError
from bench.pixels import RunShape, synthesize_run
from bench.profile import Profile
from bench.xa import RunKeys, StudyKeys, build_instance

FIRST_NAMES = ["ANNA", "BORIS", "CHLOE", "DIMITRIS", "ELENI", "FRANZ", "GEORGIA", "HUGO", "IRINI", "JONAS"]
LAST_NAMES = ["PAPADOPOULOS", "MUELLER", "MARTIN", "ROSSI", "NOWAK", "SILVA", "JANSEN", "KOVAC", "BERG", "LAINE"]


@dataclass(frozen=True)
class RunPlan:
    shape: RunShape
    keys: RunKeys
    pixel_seed: int


@dataclass(frozen=True)
class StudyPlan:
    index: int
    keys: StudyKeys
    runs: list[RunPlan]

    @property
    def frames(self) -> int:
        return sum(r.shape.frames for r in self.runs)

    @property
    def folder_name(self) -> str:
        return f"study-{self.index:04d}"


@dataclass
class Totals:
    studies: int = 0
    instances: int = 0
    frames: int = 0
    bytes: int = 0
    paths: list[Path] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.studies} studies, {self.instances} instances, {self.frames} frames, "
            f"{self.bytes / 1e6:.1f} MB"
        )


def _uid(*parts: object) -> str:
    """A deterministic UID in the 2.25 (UUID-derived) form: 128 bits of a hash of the parts."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def plan_study(profile: Profile, seed: int, index: int) -> StudyPlan:
    """Decide sizes, patient and UIDs of study `index` for this profile and seed."""
    rng = np.random.default_rng([seed, index, 0x5354])
    day = dt.date(2025, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    start_minute = int(rng.integers(8 * 60, 17 * 60))
    patient = int(rng.integers(0, 10**6))
    keys = StudyKeys(
        patient_name=f"{LAST_NAMES[patient % 10]}^{FIRST_NAMES[(patient // 10) % 10]}",
        patient_id=f"PB{seed:04d}{patient:06d}"[-16:],
        birth_date=f"{1935 + patient % 60}{1 + patient % 12:02d}{1 + patient % 28:02d}",
        sex="MF"[patient % 2],
        study_uid=_uid(profile.name, seed, index, "study"),
        study_id=str(index + 1),
        accession=f"A{seed % 1000:03d}{index:08d}"[-16:],
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{start_minute // 60:02d}{start_minute % 60:02d}00",
    )
    n_runs = int(rng.integers(profile.runs_per_study.min, profile.runs_per_study.max + 1))
    runs = []
    for r in range(n_runs):
        frames = int(rng.integers(profile.frames_per_run.min, profile.frames_per_run.max + 1))
        minute = start_minute + 2 * r
        shape = RunShape(profile.rows, profile.columns, frames, profile.bits_stored, profile.mask_frames)
        run_keys = RunKeys(
            series_uid=_uid(profile.name, seed, index, r, "series"),
            sop_uid=_uid(profile.name, seed, index, r, "instance"),
            series_number=r + 1,
            acquisition_time=f"{(minute // 60) % 24:02d}{minute % 60:02d}{int(rng.integers(0, 60)):02d}",
            primary_angle=float(np.round(rng.uniform(-45, 45), 1)),
            secondary_angle=float(np.round(rng.uniform(-30, 30), 1)),
        )
        runs.append(RunPlan(shape, run_keys, pixel_seed=int(rng.integers(0, 2**63))))
    return StudyPlan(index, keys, runs)


def synthesize_study(plan: StudyPlan, profile: Profile, on_frames=None) -> Iterator[Dataset]:
    """Yield the study's instances, one per run, synthesizing the pixels."""
    for run in plan.runs:
        pixels = synthesize_run(run.shape, run.pixel_seed)
        yield build_instance(pixels, run.shape, plan.keys, run.keys, profile.frame_rate, profile.body_part)
        if on_frames:
            on_frames(run.shape.frames)


def _replace_dir(partial: Path, final: Path) -> None:
    """Move a complete folder into place, replacing an older copy if there is one."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)


def write_study(plan: StudyPlan, profile: Profile, out: Path, totals: Totals, on_frames=None) -> None:
    """Write one study as out/study-NNNN/run-RR.dcm, all or nothing."""
    partial = out / f".partial-{plan.folder_name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        written = []
        for ds in synthesize_study(plan, profile, on_frames):
            name = f"run-{int(ds.SeriesNumber):02d}.dcm"
            ds.save_as(partial / name, enforce_file_format=True)
            written.append((name, int(ds.NumberOfFrames), (partial / name).stat().st_size))
        _replace_dir(partial, out / plan.folder_name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    totals.studies += 1
    for name, frames, size in written:
        totals.instances += 1
        totals.frames += frames
        totals.bytes += size
        totals.paths.append(out / plan.folder_name / name)


def generate(profile: Profile, studies: int, seed: int, out: Path, progress: bool = True) -> Totals:
    """Generate `studies` studies into `out`; returns what was written."""
    if studies < 1:
        raise UserError(f"--studies must be at least 1 (got {studies})")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    plans = [plan_study(profile, seed, i) for i in range(studies)]
    totals = Totals()
    with tqdm(
        total=sum(p.frames for p in plans),
        unit="frame",
        desc=f"generate {profile.name}",
        disable=not progress,
        leave=False,
    ) as bar:
        for plan in plans:
            try:
                write_study(plan, profile, out, totals, on_frames=bar.update)
            except OSError as exc:
                raise UserError(f"cannot write study into {out}: {exc.strerror or exc}") from None
    return totals
