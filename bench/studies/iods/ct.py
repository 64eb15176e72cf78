"""CT Image IOD (single-frame): localizers, axial slices and reformats, 16-bit signed with a rescale to HU.

Modules: Patient, General Study, General Series, Frame of Reference, General Equipment, General
Image, Image Plane, Image Pixel, CT Image, VOI LUT, SOP Common. Stored values are HU + 1024
(Rescale Intercept -1024), as many scanners store them; outside the reconstruction circle the
value is that of air.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

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

INTERCEPT = -1024.0
NOISE_HU = 12.0  # soft-tissue noise of a routine dose scan
SOP_CLASS = CTImageStorage


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    ds = new_instance(SOP_CLASS, inst, study)
    patient_and_study(ds, study, profile)
    series_and_equipment(ds, "CT", spec, series, profile, study)
    frame_of_reference(ds, series)
    kind = spec.kind or "axial"
    if kind == "localizer":
        image_type = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    elif kind == "reformat":
        image_type = ["DERIVED", "SECONDARY", "REFORMATTED"]
    else:
        image_type = ["ORIGINAL", "PRIMARY", "AXIAL"]
    general_image(ds, study, inst, image_type)
    image_plane(ds, spec, inst, AXIAL if kind == "axial" else CORONAL)
    image_pixel(ds, spec, signed=True)
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1.0
    if kind != "localizer":  # a localizer's values are not HU (a projection); dciodvfy checks that
        ds.RescaleType = "HU"
    ds.KVP = 120
    ds.XRayTubeCurrent = 200
    ds.ExposureTime = 500
    ds.ConvolutionKernel = "STANDARD"
    ds.ReconstructionDiameter = round(spec.pixel_spacing * spec.columns, 3)
    ds.PatientPosition = "FFS"
    voi_window(ds, 40, 400, "SOFT TISSUE")
    return ds


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """One slice (1, rows, columns) int16 of stored values (HU - intercept)."""
    if spec.kind == "localizer":
        hu = anatomy.chest_radiograph(spec.rows, spec.columns, rng) * 2000.0 - 1000.0
    else:
        hu = anatomy.cross_section("ct", spec.rows, spec.columns, z, rng, texture_amount=15.0)
        hu = anatomy.add_noise(hu, NOISE_HU * np.where(hu > -900, 1.0, 0.3), rng)
        y, x = np.ogrid[0 : spec.rows, 0 : spec.columns]
        radius = min(spec.rows, spec.columns) / 2
        outside = (y - spec.rows / 2 + 0.5) ** 2 + (x - spec.columns / 2 + 0.5) ** 2 > radius * radius
        hu[outside] = -1000.0
    top = (1 << (spec.bits_stored - 1)) - 1
    stored = np.clip(np.rint(hu - INTERCEPT), -top - 1, top).astype(np.int16)
    return stored[None]
