"""MR Image IOD (single-frame): localizers, T1, T2 and diffusion-weighted series, 12 bits stored in 16.

Modules: Patient, General Study, General Series, Frame of Reference, General Equipment, General
Image, Image Plane, Image Pixel, MR Image, VOI LUT, SOP Common. Signal comes from the shared
phantom's tissue values for the series' contrast; the noise is Rician, as magnitude images have.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage

from bench.studies import anatomy
from bench.studies.header import StudyKeys
from bench.studies.iods.common import (
    AXIAL,
    CORONAL,
    InstanceKeys,
    SeriesKeys,
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

SOP_CLASS = MRImageStorage

# kind: (contrast, sequence (0018,0020), variant, TR ms, TE ms, echo train, sequence name, noise share)
SEQUENCES = {
    "localizer": ("t1", "GR", "SP", 8.6, 4.0, 1, "fl2d1", 0.04),
    "t1": ("t1", "SE", "SK", 550.0, 10.0, 3, "tse2d1_3", 0.02),
    "t2": ("t2", "SE", "SK", 4000.0, 90.0, 15, "tse2d1_15", 0.02),
    "dwi": ("dwi", "EP", "SK", 5200.0, 70.0, 1, "ep_b1000t", 0.06),
}


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    kind = spec.kind or "t1"
    _, sequence, variant, tr, te, train, name, _ = SEQUENCES[kind]
    ds = new_instance(SOP_CLASS, inst, study)
    patient_and_study(ds, study, profile)
    series_and_equipment(ds, "MR", spec, series, profile, study)
    frame_of_reference(ds, series)
    image_type = ["ORIGINAL", "PRIMARY", "OTHER"]  # value 3 names derived maps (T1 MAP, DIFFUSION MAP...): none here
    general_image(ds, study, inst, image_type)
    image_plane(ds, spec, inst, CORONAL if kind == "localizer" else AXIAL)
    image_pixel(ds, spec)
    ds.ScanningSequence = sequence
    ds.SequenceVariant = variant
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = tr
    ds.EchoTime = te
    ds.EchoTrainLength = train
    ds.SequenceName = name
    ds.AngioFlag = "N"
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = 123.2
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = 3
    ds.SpacingBetweenSlices = spec.slice_thickness
    ds.PixelBandwidth = 200
    ds.PatientPosition = "HFS"
    top = (1 << spec.bits_stored) - 1
    voi_window(ds, top // 4, top // 2)
    return ds


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """One magnitude image (1, rows, columns) uint16: tissue signal with Rician noise."""
    contrast, *_, noise = SEQUENCES[spec.kind or "t1"]
    signal = anatomy.cross_section(contrast, spec.rows, spec.columns, z, rng, texture_amount=0.05)
    real = anatomy.add_noise(signal, noise, rng)
    imaginary = anatomy.add_noise(np.zeros_like(signal), noise, rng)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    top = (1 << spec.bits_stored) - 1
    return np.clip(np.rint(magnitude * top * 0.5), 0, top).astype(np.uint16)[None]
