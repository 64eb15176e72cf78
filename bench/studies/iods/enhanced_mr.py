"""Enhanced MR Image IOD: one multi-frame instance per series (the mr-enhanced profile).

Modules: Patient, General Study, General Series, MR Series, Frame of Reference, General Equipment,
Enhanced General Equipment, Image Pixel, Multi-frame Functional Groups, Multi-frame Dimension,
Acquisition Context, Enhanced MR Image, MR Pulse Sequence, SOP Common. Shared functional groups hold
the stack's common geometry, the sequence's timing, echo, coils and modifiers; each frame has its
position and place in the stack. The pixels are the MR Image builder's (bench.studies.iods.mr).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage

from bench.studies.header import StudyKeys
from bench.studies.iods import mr
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

SOP_CLASS = EnhancedMRImageStorage
FRAME_TYPE = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]


def _shared_groups(spec: SeriesSpec) -> Dataset:
    kind = spec.kind or "t1"
    _, sequence, variant, tr, te, train, name, _ = mr.SEQUENCES[kind]
    return item(
        **axial_stack_geometry(spec),
        MRImageFrameTypeSequence=[
            item(
                FrameType=FRAME_TYPE,
                PixelPresentation="MONOCHROME",
                VolumetricProperties="VOLUME",
                VolumeBasedCalculationTechnique="NONE",
                ComplexImageComponent="MAGNITUDE",
                AcquisitionContrast="DIFFUSION" if kind == "dwi" else ("T2" if kind == "t2" else "T1"),
            )
        ],
        MRTimingAndRelatedParametersSequence=[
            item(
                RepetitionTime=tr,
                FlipAngle=90.0,
                EchoTrainLength=train,
                RFEchoTrainLength=train,
                GradientEchoTrainLength=0,
                GradientOutputType="DB_DT",
                GradientOutput=0.5,
                SpecificAbsorptionRateSequence=[
                    item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY", SpecificAbsorptionRateValue=1.0)
                ],
                OperatingModeSequence=[item(OperatingModeType="STATIC FIELD", OperatingMode="IEC_NORMAL")],
            )
        ],
        MRFOVGeometrySequence=[
            item(
                InPlanePhaseEncodingDirection="ROW",
                MRAcquisitionFrequencyEncodingSteps=spec.columns,
                MRAcquisitionPhaseEncodingStepsInPlane=spec.rows,
                PercentSampling=100.0,
                PercentPhaseFieldOfView=100.0,
            )
        ],
        MREchoSequence=[item(EffectiveEchoTime=te)],
        MRModifierSequence=[
            item(
                InversionRecovery="NO",
                FlowCompensation="NONE",
                Spoiling="NONE",
                T2Preparation="NO",
                SpectrallySelectedExcitation="NONE",
                SpatialPresaturation="NONE",
                PartialFourier="NO",
                ParallelAcquisition="NO",
            )
        ],
        MRImagingModifierSequence=[
            item(
                MagnetizationTransfer="NONE",
                BloodSignalNulling="NO",
                Tagging="NONE",
                TransmitterFrequency=123.2,
                PixelBandwidth=200.0,
            )
        ],
        MRReceiveCoilSequence=[
            item(
                ReceiveCoilName="HEAD 32",
                ReceiveCoilManufacturerName="pacsbench",
                ReceiveCoilType="MULTICOIL",
                QuadratureReceiveCoil="NO",
                MultiCoilDefinitionSequence=[item(MultiCoilElementName="H1", MultiCoilElementUsed="YES")],
            )
        ],
        MRTransmitCoilSequence=[
            item(TransmitCoilName="BODY", TransmitCoilManufacturerName="pacsbench", TransmitCoilType="BODY")
        ],
        MRAveragesSequence=[item(NumberOfAverages=1.0)],
        FrameAnatomySequence=[item(FrameLaterality="U", AnatomicRegionSequence=[code("69536005", "Head")])],
        PixelValueTransformationSequence=[item(RescaleIntercept=0.0, RescaleSlope=1.0, RescaleType="US")],
        FrameVOILUTSequence=[item(WindowCenter=(1 << spec.bits_stored) // 4, WindowWidth=(1 << spec.bits_stored) // 2)],
        MRDiffusionSequence=[
            item(
                DiffusionBValue=1000.0 if kind == "dwi" else 0.0,
                DiffusionDirectionality="ISOTROPIC" if kind == "dwi" else "NONE",
            )
        ],
    )


def _per_frame(spec: SeriesSpec, frames: int, study: StudyKeys) -> list[Dataset]:
    return [
        item(
            **axial_frame(spec, study, n, 200.0),
        )
        for n in range(1, frames + 1)
    ]


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    kind = spec.kind or "t1"
    _, sequence, variant, tr, te, train, name, _ = mr.SEQUENCES[kind]
    ds = multiframe_instance(SOP_CLASS, "MR", FRAME_TYPE, spec, profile, study, series, inst)
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDateTime = f"{study.study_date}{inst.acquisition_time}"
    ds.AcquisitionDuration = round(frames * tr / 1000.0, 3)
    ds.ContentQualification = "PRODUCT"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "DIFFUSION" if kind == "dwi" else ("T2" if kind == "t2" else "T1")
    ds.PulseSequenceName = name
    ds.MRAcquisitionType = "2D"
    ds.EchoPulseSequence = "GRADIENT" if sequence in ("GR", "EP") else "SPIN"
    if ds.EchoPulseSequence == "SPIN":  # asked of spin echo sequences only
        ds.MultipleSpinEcho = "YES" if train > 1 else "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if sequence == "EP" else "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.NumberOfKSpaceTrajectories = 1
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = 3.0
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImageComments = ""
    multiframe_pixels_and_groups(ds, spec, series, frames, _shared_groups(spec), _per_frame(spec, frames, study))
    return ds


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """`frames` slices (frames, rows, columns) uint16 of the MR Image builder, stepping through the body from z."""
    step = 0.3 / max(frames, 1)
    return np.concatenate([mr.pixels(spec, min(z + i * step, 1.0), rng) for i in range(frames)])
