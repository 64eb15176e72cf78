"""Digital X-Ray and Digital Mammography X-Ray IODs, For Presentation (single-frame, 16 bits allocated).

Modules: Patient, General Study, General Series, DX Series or Mammography Series, General
Equipment, General Image, Image Pixel, DX Anatomy Imaged, DX Image, DX Detector, Mammography
Image (MG), VOI LUT, Acquisition Context, SOP Common. A DX series is a chest radiograph (PA or
LAT); an MG series one view (kind "CC" or "MLO") of one breast, the laterality from the
description's first letter (R or L).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, DigitalXRayImageStorageForPresentation

from bench.studies import anatomy
from bench.studies.header import StudyKeys
from bench.studies.iods.common import (
    InstanceKeys,
    SeriesKeys,
    code,
    general_image,
    image_pixel,
    new_instance,
    patient_and_study,
    series_and_equipment,
    voi_window,
)
from bench.studies.profile import SeriesSpec, StudyProfile

SOP_CLASS = DigitalXRayImageStorageForPresentation
QUANTA = 4000.0  # detected quanta per pixel through the thinnest part: sets the noise, hence the ratio

# SNOMED CT codes (DICOM CID 4014 view, CID 4031 region) as the standard lists them.
VIEWS = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "PA": ("399348003", "postero-anterior"),
    "LAT": ("399198007", "lateral"),
}


def _laterality(spec: SeriesSpec) -> str:
    return spec.description[:1] if spec.description[:1] in ("R", "L") else ""


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    mammography = spec.iod == "mg"
    sop_class = DigitalMammographyXRayImageStorageForPresentation if mammography else SOP_CLASS
    ds = new_instance(sop_class, inst, study)
    patient_and_study(ds, study, profile)
    series_and_equipment(ds, "MG" if mammography else "DX", spec, series, profile, study)
    ds.PresentationIntentType = "FOR PRESENTATION"
    general_image(ds, study, inst, ["ORIGINAL", "PRIMARY", ""])
    ds.PatientOrientation = ["A", "R"] if mammography and _laterality(spec) == "R" else ["P", "L"]
    image_pixel(ds, spec)
    ds.ImageLaterality = _laterality(spec) or "U"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.DetectorType = "DIRECT" if mammography else "SCINTILLATOR"
    ds.ImagerPixelSpacing = [spec.pixel_spacing, spec.pixel_spacing]
    ds.AcquisitionContextSequence = []
    ds.KVP = 29 if mammography else 120
    ds.ExposureTime = 1200 if mammography else 10
    ds.XRayTubeCurrent = 100 if mammography else 250
    view, meaning = VIEWS[spec.kind or ("CC" if mammography else "PA")]
    ds.ViewCodeSequence = [code(view, meaning)]
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
    if mammography:
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.OrganExposed = "BREAST"
        ds.AnatomicRegionSequence = [code("76752008", "Breast")]
        ds.BreastImplantPresent = "NO"
        ds.PartialView = "NO"
        ds.BodyPartThickness = 55.0
        ds.CompressionForce = 100.0
    else:
        ds.PositionerType = "NONE"  # a wall stand: the DX Positioning module's term for no positioner
        ds.AnatomicRegionSequence = [code("51185008", "Thorax")]
    top = (1 << spec.bits_stored) - 1
    voi_window(ds, top // 2, top)
    return ds


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """One radiograph (1, rows, columns) uint16: attenuation shown bright, quantum noise, LOG scaled."""
    if spec.iod in ("mg", "breast-tomo"):
        attenuation = anatomy.breast_projection(spec.rows, spec.columns, rng, right=_laterality(spec) == "R")
    else:
        attenuation = anatomy.chest_radiograph(spec.rows, spec.columns, rng)
    # Quanta fall with attenuation; their Poisson noise, taken to the log, grows with it.
    detected = QUANTA * np.exp(-3.0 * attenuation)
    sigma = 1.0 / np.sqrt(detected)  # of log(detected)
    log_signal = anatomy.add_noise(3.0 * attenuation, sigma, rng)
    top = (1 << spec.bits_stored) - 1
    return np.clip(np.rint(log_signal / 3.0 * top), 0, top).astype(np.uint16)[None]
