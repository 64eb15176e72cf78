"""Enhanced CT Image IOD: one multi-frame instance per series (the `enhanced` option of the ct profile).

Modules: Patient, General Study, General Series, CT Series, Frame of Reference, General Equipment,
Enhanced General Equipment, Image Pixel, Multi-frame Functional Groups, Multi-frame Dimension,
Acquisition Context, Enhanced CT Image, SOP Common. The shared functional groups hold what every frame
of an axial stack has in common (pixel measures, orientation, frame type, acquisition and
reconstruction details, rescale to HU, window); each frame has its position and its place in the stack
(Frame Content, Plane Position). The pixels are the CT Image builder's (bench.studies.iods.ct).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedCTImageStorage

from bench.studies.generate import derived_uid
from bench.studies.header import StudyKeys
from bench.studies.iods import ct
from bench.studies.iods.common import (
    InstanceKeys,
    SeriesKeys,
    axial_frame,
    axial_stack_geometry,
    code,
    item,
    multiframe_instance,
    multiframe_pixels_and_groups,
)
from bench.studies.profile import SeriesSpec, StudyProfile

SOP_CLASS = EnhancedCTImageStorage
FRAME_TYPE = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]  # value 3, the image flavor: a volume of slices


def _shared_groups(spec: SeriesSpec, series: SeriesKeys) -> Dataset:
    fov = round(spec.pixel_spacing * spec.columns, 3)
    return item(
        **axial_stack_geometry(spec),
        CTImageFrameTypeSequence=[
            item(
                FrameType=FRAME_TYPE,
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
            )
        ],
        CTAcquisitionTypeSequence=[item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")],
        CTAcquisitionDetailsSequence=[
            item(
                DataCollectionDiameter=500.0,
                GantryDetectorTilt=0.0,
                TableHeight=150.0,
                RotationDirection="CW",
                RevolutionTime=0.5,
                SingleCollimationWidth=0.625,
                TotalCollimationWidth=40.0,
            )
        ],
        CTTableDynamicsSequence=[item(TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0)],
        CTGeometrySequence=[item(DistanceSourceToDetector=1040.0, DistanceSourceToDataCollectionCenter=570.0)],
        CTReconstructionSequence=[
            item(
                ReconstructionAlgorithm="FILTER_BACK_PROJ",
                ConvolutionKernel="STANDARD",
                ConvolutionKernelGroup="SOFT_TISSUE",
                ReconstructionFieldOfView=[fov, fov],
                ReconstructionPixelSpacing=[spec.pixel_spacing, spec.pixel_spacing],
                ReconstructionAngle=360.0,
                ImageFilter="NONE",
            )
        ],
        CTExposureSequence=[
            item(
                ExposureTimeInms=500.0,
                XRayTubeCurrentInmA=200.0,
                ExposureInmAs=100.0,
                ExposureModulationType="NONE",
            )
        ],
        CTXRayDetailsSequence=[item(KVP=120.0, FocalSpots=[1.0], FilterType="BODY", FilterMaterial=["ALUMINUM"])],
        FrameAnatomySequence=[item(FrameLaterality="U", AnatomicRegionSequence=[code("51185008", "Thorax")])],
        PixelValueTransformationSequence=[item(RescaleIntercept=ct.INTERCEPT, RescaleSlope=1.0, RescaleType="HU")],
        FrameVOILUTSequence=[item(WindowCenter=40, WindowWidth=400)],
        IrradiationEventIdentificationSequence=[
            item(IrradiationEventUID=derived_uid(series.series_uid, "irradiation"))
        ],
    )


def _per_frame(spec: SeriesSpec, frames: int, study: StudyKeys) -> list[Dataset]:
    return [
        item(
            **axial_frame(spec, study, n, 500.0),
            CTPositionSequence=[
                item(
                    TablePosition=round(n * spec.slice_thickness, 3),
                    ReconstructionTargetCenterPatient=[0.0, 0.0, round(n * spec.slice_thickness, 3)],
                    DataCollectionCenterPatient=[0.0, 0.0, round(n * spec.slice_thickness, 3)],
                )
            ],
        )
        for n in range(1, frames + 1)
    ]


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    ds = multiframe_instance(SOP_CLASS, "CT", FRAME_TYPE, spec, profile, study, series, inst)
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = f"{study.study_date}{inst.acquisition_time}"
    ds.AcquisitionDuration = round(frames * 0.05, 3)
    ds.ContentQualification = "PRODUCT"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.PatientPosition = "FFS"
    multiframe_pixels_and_groups(
        ds, spec, series, frames, _shared_groups(spec, series), _per_frame(spec, frames, study), signed=True
    )
    return ds


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """`frames` axial slices (frames, rows, columns) int16, stepping through the body from z."""
    step = 0.3 / max(frames, 1)
    return np.concatenate([ct.pixels(spec, min(z + i * step, 1.0), rng) for i in range(frames)])
