"""PET Image IOD (single-frame): static whole-body or dynamic series, 16-bit with a per-image rescale to Bq/ml.

Modules: Patient, General Study, General Series, PET Series, PET Isotope, NM/PET Patient
Orientation, Frame of Reference, General Equipment, General Image, Image Plane, Image Pixel,
PET Image, VOI LUT, SOP Common. A dynamic series (kind "dynamic") repeats its slices over time
slices: ImageIndex = (time slice - 1) x slices + slice, as the PET Series module defines.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import PositronEmissionTomographyImageStorage

from bench.studies import anatomy
from bench.studies.header import StudyKeys
from bench.studies.iods.common import (
    AXIAL,
    InstanceKeys,
    SeriesKeys,
    code,
    frame_of_reference,
    general_image,
    image_pixel,
    image_plane,
    new_instance,
    patient_and_study,
    series_and_equipment,
    voi_window,
)
from bench.studies.profile import SeriesSpec, StudyProfile

SOP_CLASS = PositronEmissionTomographyImageStorage
SLICES = 300  # axial slices of one whole-body frame; a dynamic series repeats them per time slice
SUV_TO_BQML = 5000.0  # activity per unit SUV for ~350 MBq of FDG in 70 kg
COUNTS = 40.0  # counts per unit SUV per voxel: sets the Poisson noise


def _slices(inst: InstanceKeys) -> int:
    return min(SLICES, inst.count)


def _isotope(ds: Dataset, study: StudyKeys) -> None:
    drug = Dataset()
    drug.RadionuclideCodeSequence = [code("77004003", "^18^Fluorine")]
    drug.Radiopharmaceutical = "Fluorodeoxyglucose"
    drug.RadiopharmaceuticalCodeSequence = [code("35321007", "Fluorodeoxyglucose F^18^")]
    drug.RadiopharmaceuticalStartTime = "080000"
    drug.RadionuclideTotalDose = 350_000_000.0
    drug.RadionuclideHalfLife = 6586.2
    drug.RadionuclidePositronFraction = 0.967
    ds.RadiopharmaceuticalInformationSequence = [drug]
    ds.PatientOrientationCodeSequence = [code("102538003", "recumbent")]
    ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = [code("40199007", "supine")]
    ds.PatientGantryRelationshipCodeSequence = [code("126830008", "headfirst")]


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    dynamic = spec.kind == "dynamic"
    slices = _slices(inst) if dynamic else inst.count
    time_slices = max(1, -(-inst.count // slices)) if dynamic else 1
    ds = new_instance(SOP_CLASS, inst, study)
    patient_and_study(ds, study, profile)
    series_and_equipment(ds, "PT", spec, series, profile, study)
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["DYNAMIC" if dynamic else "WHOLE BODY", "IMAGE"]
    ds.NumberOfSlices = slices
    if dynamic:
        ds.NumberOfTimeSlices = time_slices
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    ds.RandomsCorrectionMethod = "DLYD"
    ds.AttenuationCorrectionMethod = "CT"
    ds.ScatterCorrectionMethod = "MODEL"
    ds.DecayCorrection = "START"
    ds.ReconstructionMethod = "OSEM"
    ds.CollimatorType = "NONE"
    _isotope(ds, study)
    frame_of_reference(ds, series)
    general_image(ds, study, inst, ["ORIGINAL", "PRIMARY"])
    image_plane(ds, spec, _position_keys(inst, slices), AXIAL)
    image_pixel(ds, spec)
    ds.RescaleIntercept = 0
    ds.RescaleSlope = round(SUV_TO_BQML * 10 / ((1 << spec.bits_stored) - 1), 6)  # 10 SUV at full scale
    time_slice = (inst.number - 1) // slices
    ds.FrameReferenceTime = 30_000.0 * time_slice + 15_000.0
    ds.ImageIndex = inst.number
    ds.ActualFrameDuration = 30_000 if dynamic else 120_000
    ds.DecayFactor = 1.05
    ds.DoseCalibrationFactor = 1.0
    voi_window(ds, SUV_TO_BQML * 2.5, SUV_TO_BQML * 5)
    return ds


def _position_keys(inst: InstanceKeys, slices: int) -> InstanceKeys:
    """A dynamic series' time slices repeat the same positions."""
    from dataclasses import replace

    return replace(inst, number=(inst.number - 1) % slices + 1)


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """One slice (1, rows, columns) uint16: uptake with Poisson-like noise, smoothed as a PET reconstruction is."""
    suv = anatomy.cross_section("pet", spec.rows, spec.columns, z, rng, texture_amount=0.15)
    counts = np.clip(suv, 0.0, None) * COUNTS
    noisy = anatomy.add_noise(counts, np.sqrt(counts + 1.0), rng) / COUNTS
    top = (1 << spec.bits_stored) - 1
    return np.clip(np.rint(noisy / 10.0 * top), 0, top).astype(np.uint16)[None]
