"""Breast Tomosynthesis Image IOD: one reconstructed slab stack per view, a large multi-frame instance.

Modules: Patient, General Study, General Series, Enhanced Mammography Series, Frame of Reference,
General Equipment, Enhanced General Equipment, Image Pixel, Multi-frame Functional Groups, Multi-frame
Dimension, Acquisition Context, Breast Tomosynthesis Acquisition, X-Ray 3D Image, Breast View,
SOP Common. Frames are 1 mm slices through the compressed breast (the mg builder's projection, each
slice with its own texture and noise).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import BreastTomosynthesisImageStorage

from bench.studies.header import StudyKeys
from bench.studies.iods import dx
from bench.studies.iods.common import (
    InstanceKeys,
    SeriesKeys,
    code,
    item,
    multiframe_instance,
    multiframe_pixels_and_groups,
    stack_frame_content,
)
from bench.studies.profile import SeriesSpec, StudyProfile

SOP_CLASS = BreastTomosynthesisImageStorage
FRAME_TYPE = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    ds = multiframe_instance(SOP_CLASS, "MG", FRAME_TYPE, spec, profile, study, series, inst)
    ds.ContentQualification = "PRODUCT"
    view, meaning = dx.VIEWS[spec.kind or "CC"]
    ds.ViewCodeSequence = [code(view, meaning)]
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
    per_frame = [_frame(spec, n, study) for n in range(1, frames + 1)]
    multiframe_pixels_and_groups(ds, spec, series, frames, _shared(spec), per_frame)
    return ds


def _shared(spec: SeriesSpec) -> Dataset:
    return item(
        PixelMeasuresSequence=[item(PixelSpacing=[spec.pixel_spacing, spec.pixel_spacing], SliceThickness=1.0)],
        PlaneOrientationSequence=[item(ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0])],
        FrameAnatomySequence=[
            item(FrameLaterality=spec.description[:1], AnatomicRegionSequence=[code("76752008", "Breast")])
        ],
        PixelValueTransformationSequence=[item(RescaleIntercept=0.0, RescaleSlope=1.0, RescaleType="US")],
        FrameVOILUTSequence=[item(WindowCenter=(1 << spec.bits_stored) // 2, WindowWidth=1 << spec.bits_stored)],
    )


def _frame(spec: SeriesSpec, n: int, study: StudyKeys) -> Dataset:
    return item(
        FrameContentSequence=stack_frame_content(study, n, 4000.0),
        PlanePositionSequence=[item(ImagePositionPatient=[float(n), 0.0, 0.0])],
        XRay3DFrameTypeSequence=[  # per frame, as the X-Ray 3D Frame Type macro asks in this IOD
            item(
                FrameType=FRAME_TYPE,
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="TOMOSYNTHESIS",
            )
        ],
    )


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """`frames` slices (frames, rows, columns) uint16: the breast with a fresh texture and noise per slice."""
    return np.concatenate([dx.pixels(spec, z, rng) for _ in range(frames)])
