"""Generate synthetic DSA studies: plan (sizes, keys, UIDs) from a seed, synthesize, write.

Everything is a pure function of (profile, seed, study index), so the same command makes
byte-identical files. Studies belong to patients: consecutive studies share a patient
(`studies_per_patient` in the profile), each visit on a later date. Each study is written
into a hidden partial folder and renamed into place when complete: an interrupted run
(or a failing encoder) leaves no half study behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset
from tqdm import tqdm

from bench.common.errors import UserError
from bench.studies.encode import TransferSyntax, attach_pixel_data, encode_pixel_data, require_encoder, transfer_syntax
from bench.studies.header import StudyKeys
from bench.studies.pixels import RunShape, synthesize_run
from bench.studies.profile import Profile
from bench.studies.xa import RunKeys, build_header

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
    per_study: list[tuple[str, int, int, int]] = field(default_factory=list)  # (folder, instances, frames, bytes)

    def add(self, folder: Path, written: list[tuple[str, int, int]]) -> None:
        """Count one complete study: (file name, frames, bytes) per instance."""
        self.studies += 1
        self.per_study.append((folder.name, len(written), sum(w[1] for w in written), sum(w[2] for w in written)))
        for name, frames, size in written:
            self.instances += 1
            self.frames += frames
            self.bytes += size
            self.paths.append(folder / name)

    def line(self) -> str:
        return f"{self.studies} studies, {self.instances} instances, {self.frames} frames, {self.bytes / 1e6:.1f} MB"


def derived_uid(*parts: object) -> str:
    """A deterministic UID in the 2.25 (UUID-derived) form: 128 bits of a hash of the parts."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def patient_visits(profile: Profile, seed: int, count: int) -> list[tuple[int, int]]:
    """(patient number, visit number) of the first `count` studies.

    Patients come in order, each with `studies_per_patient` consecutive studies; the draws
    come from one stream per seed, so a longer list starts with the shorter one.
    """
    rng = np.random.default_rng([seed, 0x5041])
    visits: list[tuple[int, int]] = []
    patient = 0
    while len(visits) < count:
        visits += [(patient, visit) for visit in range(profile.studies_per_patient.draw(rng))]
        patient += 1
    return visits[:count]


def study_keys(profile: Profile, seed: int, index: int, patient: int, visit: int, rng) -> StudyKeys:
    """Patient attributes come from the patient alone; dates move on with each visit."""
    person = np.random.default_rng([seed, patient, 0x5054])
    number = int(person.integers(0, 10**6))
    first_day = dt.date(2025, 1, 1) + dt.timedelta(days=int(person.integers(0, 365)))
    day = first_day + dt.timedelta(days=sum(int(person.integers(1, 120)) for _ in range(visit)))
    start_minute = int(rng.integers(8 * 60, 17 * 60))
    return StudyKeys(
        patient_name=f"{LAST_NAMES[number % 10]}^{FIRST_NAMES[(number // 10) % 10]}",
        patient_id=f"PB{seed:04d}{patient:06d}"[-16:],
        birth_date=f"{1935 + number % 60}{1 + number % 12:02d}{1 + number % 28:02d}",
        sex="MF"[number % 2],
        study_uid=derived_uid(profile.name, seed, index, "study"),
        study_id=str(index + 1),
        accession=f"A{seed % 1000:03d}{index:08d}"[-16:],
        study_date=day.strftime("%Y%m%d"),
        study_time=f"{start_minute // 60:02d}{start_minute % 60:02d}00",
    )


def plan_study(profile: Profile, seed: int, index: int, visit: tuple[int, int] | None = None) -> StudyPlan:
    """Decide sizes, patient and UIDs of study `index` for this profile and seed.

    `visit` is this study's (patient, visit) from patient_visits(); computed when absent.
    """
    patient, visit_number = visit or patient_visits(profile, seed, index + 1)[index]
    rng = np.random.default_rng([seed, index, 0x5354])
    keys = study_keys(profile, seed, index, patient, visit_number, rng)
    start_minute = int(keys.study_time[:2]) * 60 + int(keys.study_time[2:4])
    runs = []
    for r in range(profile.runs_per_study.draw(rng)):
        frames = profile.frames_per_run.draw(rng)
        minute = start_minute + 2 * r
        shape = RunShape(
            profile.rows,
            profile.columns,
            frames,
            profile.bits_stored,
            profile.mask_frames,
            dose=profile.dose,
            intensity=profile.pixel_intensity_relationship,
        )
        run_keys = RunKeys(
            series_uid=derived_uid(profile.name, seed, index, r, "series"),
            sop_uid=derived_uid(profile.name, seed, index, r, "instance"),
            series_number=r + 1,
            acquisition_time=f"{(minute // 60) % 24:02d}{minute % 60:02d}{int(rng.integers(0, 60)):02d}",
            primary_angle=float(np.round(rng.uniform(-45, 45), 1)),
            secondary_angle=float(np.round(rng.uniform(-30, 30), 1)),
        )
        runs.append(RunPlan(shape, run_keys, pixel_seed=int(rng.integers(0, 2**63))))
    return StudyPlan(index, keys, runs)


def plan_studies(profile: Profile, seed: int, count: int) -> list[StudyPlan]:
    return [plan_study(profile, seed, i, visit) for i, visit in enumerate(patient_visits(profile, seed, count))]


def synthesize_instance(run: RunPlan, plan: StudyPlan, profile: Profile, syntax: TransferSyntax) -> Dataset:
    """One run as a complete XA instance, its Pixel Data encoded in `syntax`."""
    pixels = synthesize_run(run.shape, run.pixel_seed)
    ds = build_header(run.shape, plan.keys, run.keys, profile.frame_rate, profile.body_part)
    attach_pixel_data(ds, encode_pixel_data(pixels, ds, syntax), syntax)
    return ds


def synthesize_study(
    plan: StudyPlan, profile: Profile, on_frames=None, syntax: TransferSyntax | None = None
) -> Iterator[Dataset]:
    """Yield the study's instances, one per run, synthesizing the pixels."""
    syntax = syntax or transfer_syntax(profile.transfer_syntax)
    for run in plan.runs:
        yield synthesize_instance(run, plan, profile, syntax)
        if on_frames:
            on_frames(run.shape.frames)


def replace_dir(partial: Path, final: Path) -> None:
    """Move a complete folder into place, replacing an older copy if there is one."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        partial.rename(final)


def write_study(
    plan: StudyPlan, profile: Profile, out: Path, totals: Totals, on_frames=None, syntax: TransferSyntax | None = None
) -> None:
    """Write one study as out/study-NNNN/run-RR.dcm, all or nothing."""
    partial = out / f".partial-{plan.folder_name}-{os.getpid()}"  # two processes may fill one pool cache
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        written = []
        for ds in synthesize_study(plan, profile, on_frames, syntax):
            name = f"run-{int(ds.SeriesNumber):02d}.dcm"
            ds.save_as(partial / name, enforce_file_format=True)
            written.append((name, int(ds.NumberOfFrames), (partial / name).stat().st_size))
        replace_dir(partial, out / plan.folder_name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    totals.add(out / plan.folder_name, written)


def make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None


def generate(
    profile: Profile,
    studies: int,
    seed: int,
    out: Path,
    progress: bool = True,
    syntax_name: str | None = None,
    keep_existing: bool = False,
) -> Totals:
    """Generate `studies` studies into `out`; returns what was written.

    The transfer syntax is `syntax_name`, else the profile's. Its encoder is checked before
    anything is written. With keep_existing, complete study folders already in `out` are
    kept and not counted (the pool cache grows this way).
    """
    syntax = writable_syntax(studies, syntax_name or profile.transfer_syntax, lossless_only=True)

    def write(plan: StudyPlan, totals: Totals, on_frames) -> None:
        write_study(plan, profile, out, totals, on_frames=on_frames, syntax=syntax)

    return write_studies(profile, syntax, plan_studies(profile, seed, studies), out, write, progress, keep_existing)


def writable_syntax(studies: int, name: str, lossless_only: bool = False) -> TransferSyntax:
    """The transfer syntax `name`, once the study count is sane and its encoder is here (before anything is
    written); DSA studies (`lossless_only`) refuse a lossy one."""
    if studies < 1:
        raise UserError(f"--studies must be at least 1 (got {studies})")
    syntax = transfer_syntax(name)
    if lossless_only and syntax.lossy:
        raise UserError(f"transfer syntax {syntax.name} is lossy: DSA studies are written losslessly")
    require_encoder(syntax)
    return syntax


def write_studies(profile, syntax: TransferSyntax, plans: list, out: Path, write, progress: bool, keep_existing: bool):
    """Write the planned studies into `out` with `write(plan, totals, on_frames)`, each all or nothing, under
    progress bars; with keep_existing, complete study folders already in `out` are kept and not counted."""
    make_folder(out)
    totals = Totals()
    todo = [p for p in plans if not (keep_existing and (out / p.folder_name).is_dir())]
    with progress_bars(profile, syntax, todo, progress) as (study_bar, frame_bar):
        for plan in todo:
            try:
                write(plan, totals, frame_bar.update)
            except OSError as exc:
                raise UserError(f"cannot write study into {out}: {exc.strerror or exc}") from None
            study_bar.update(1)
    return totals


@contextmanager
def progress_bars(profile: Profile, syntax: TransferSyntax, plans: list[StudyPlan], enabled: bool):
    """Two bars: studies written, and frames synthesized and encoded (the slow part).

    Shown on a terminal only (tqdm's disable=None): piped or redirected output stays clean."""
    disable = None if enabled else True
    with (
        tqdm(
            total=len(plans), unit="study", desc=f"{profile.name} studies", disable=disable, leave=False, position=0
        ) as studies,
        tqdm(
            total=sum(p.frames for p in plans),
            unit="frame",
            desc=f"{syntax.name} frames",
            disable=disable,
            leave=False,
            position=1,
        ) as frames,
    ):
        yield studies, frames
