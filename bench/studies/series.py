"""Studies of many series: plan (series, instance counts, UIDs) from a seed, synthesize, write.

A StudyProfile (CT, MR, PET-CT, DX, MG, US) lists its series; each study draws an instance
count per series and gets deterministic UIDs, as DSA studies do (bench.studies.generate, whose
patients, dates and all-or-nothing study folders this reuses). Pixels cost the most, so each
series synthesizes and encodes only `distinct_images` images and its instances take them in
turn (neighbouring instances share an image); every instance still has its own header
(SOP Instance UID, Instance Number, position), and a CT series of 2,000 slices is written in
seconds rather than minutes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from bench.studies import generate as xa_generate
from bench.studies.encode import (
    TransferSyntax,
    attach_pixel_data,
    encode_pixel_data,
    mark_lossy,
)
from bench.studies.header import StudyKeys
from bench.studies.iods import builder
from bench.studies.iods.common import InstanceKeys, SeriesKeys
from bench.studies.profile import AnyProfile, Profile, SeriesSpec, StudyProfile

Z_RANGE = (0.25, 0.85)  # the stretch of the body a series covers: from the pelvis to the neck


@dataclass(frozen=True)
class SeriesPlan:
    spec: SeriesSpec
    keys: SeriesKeys
    instances: int
    frames: int  # per instance
    pixel_seed: int

    @property
    def distinct(self) -> int:
        return min(self.spec.distinct_images, self.instances)

    def slot(self, index: int) -> int:
        """The distinct image instance `index` shows: neighbours share one."""
        return index * self.distinct // self.instances


@dataclass(frozen=True)
class SeriesStudyPlan:
    index: int
    keys: StudyKeys
    series: list[SeriesPlan]

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.series)

    @property
    def frames(self) -> int:
        return sum(s.instances * s.frames for s in self.series)

    @property
    def folder_name(self) -> str:
        return f"study-{self.index:04d}"


def _minute_time(minute: int, second: int = 0) -> str:
    return f"{(minute // 60) % 24:02d}{minute % 60:02d}{second:02d}"


def plan_study(profile: StudyProfile, seed: int, index: int, visit: tuple[int, int] | None = None) -> SeriesStudyPlan:
    """Series, instance counts, patient and UIDs of study `index`; `scale` shrinks the counts (at least 1)."""
    patient, visit_number = visit or xa_generate.patient_visits(profile, seed, index + 1)[index]
    rng = np.random.default_rng([seed, index, 0x5345])
    keys = xa_generate.study_keys(profile, seed, index, patient, visit_number, rng)
    start = int(keys.study_time[:2]) * 60 + int(keys.study_time[2:4])
    uid = xa_generate.derived_uid
    frame_of_reference = uid(profile.name, seed, index, "frame-of-reference")
    series = []
    for number, spec in enumerate(profile.series, start=1):
        present = rng.random() < spec.chance
        count = max(1, int(round(spec.instances.draw(rng) * profile.scale)))
        frames = spec.frames.draw(rng)
        if spec.scale_frames:
            frames = max(1, int(round(frames * profile.scale)))
        pixel_seed = int(rng.integers(0, 2**63))
        if not present:
            continue
        series_keys = SeriesKeys(
            series_uid=uid(profile.name, seed, index, number, "series"),
            series_number=number,
            frame_of_reference_uid=frame_of_reference,
            series_time=_minute_time(start + number),
        )
        series.append(SeriesPlan(spec, series_keys, count, frames, pixel_seed))
    return SeriesStudyPlan(index, keys, series)


def plan_studies(profile: StudyProfile, seed: int, count: int) -> list[SeriesStudyPlan]:
    visits = xa_generate.patient_visits(profile, seed, count)
    return [plan_study(profile, seed, i, visit) for i, visit in enumerate(visits)]


def instance_keys(profile: StudyProfile, seed: int, plan: SeriesStudyPlan, series: SeriesPlan, i: int) -> InstanceKeys:
    low, high = Z_RANGE
    start = int(series.keys.series_time[:2]) * 60 + int(series.keys.series_time[2:4])
    return InstanceKeys(
        sop_uid=xa_generate.derived_uid(profile.name, seed, plan.index, series.keys.series_number, i, "instance"),
        number=i + 1,
        count=series.instances,
        z=low + (high - low) * (i + 0.5) / series.instances,
        acquisition_time=_minute_time(start, min(59, i * 60 // series.instances)),
    )


def _series_pixels(series: SeriesPlan, syntax: TransferSyntax, first: Dataset) -> list[tuple[bytes, int]]:
    """The distinct images of a series, synthesized and encoded once each: (Pixel Data, native bytes)."""
    module = builder(series.spec.iod)
    low, high = Z_RANGE
    encoded = []
    for slot in range(series.distinct):
        rng = np.random.default_rng([series.pixel_seed, slot])
        z = low + (high - low) * (slot + 0.5) / series.distinct
        frames = module.pixels(series.spec, z, rng, series.frames)
        encoded.append((encode_pixel_data(frames, first, syntax), frames.nbytes))
    return encoded


def synthesize_series(profile: StudyProfile, seed: int, plan: SeriesStudyPlan, series: SeriesPlan, syntax):
    """Yield the series' instances, complete data sets in `syntax`."""
    module = builder(series.spec.iod)
    images: list[tuple[bytes, int]] = []
    for i in range(series.instances):
        keys = instance_keys(profile, seed, plan, series, i)
        ds = module.header(series.spec, profile, plan.keys, series.keys, keys, series.frames)
        if not images:
            images = _series_pixels(series, syntax, ds)
        value, native_bytes = images[series.slot(i)]
        attach_pixel_data(ds, value, syntax)
        mark_lossy(ds, syntax, native_bytes, len(value))
        yield ds


def write_study(
    plan: SeriesStudyPlan, profile: StudyProfile, seed: int, out: Path, totals, syntax: TransferSyntax, on_frames=None
) -> None:
    """Write one study as out/study-NNNN/sSSS-iIIIII.dcm, all or nothing."""
    partial = out / f".partial-{plan.folder_name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        written = []
        for series in plan.series:
            for ds in synthesize_series(profile, seed, plan, series, syntax):
                name = f"s{series.keys.series_number:03d}-i{int(ds.InstanceNumber):06d}.dcm"
                ds.save_as(partial / name, enforce_file_format=True)
                written.append((name, series.frames, (partial / name).stat().st_size))
            if on_frames:
                on_frames(series.instances * series.frames)
        xa_generate.replace_dir(partial, out / plan.folder_name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    totals.add(out / plan.folder_name, written)


def generate(
    profile: AnyProfile,
    studies: int,
    seed: int,
    out: Path,
    progress: bool = True,
    syntax_name: str | None = None,
    keep_existing: bool = False,
) -> xa_generate.Totals:
    """Generate `studies` studies of any profile into `out` (DSA profiles: bench.studies.generate)."""
    if isinstance(profile, Profile):
        return xa_generate.generate(profile, studies, seed, out, progress, syntax_name, keep_existing)
    syntax = xa_generate.writable_syntax(studies, syntax_name or profile.transfer_syntax)

    def write(plan: SeriesStudyPlan, totals: xa_generate.Totals, on_frames) -> None:
        write_study(plan, profile, seed, out, totals, syntax, on_frames=on_frames)

    plans = plan_studies(profile, seed, studies)
    return xa_generate.write_studies(profile, syntax, plans, out, write, progress, keep_existing)
