"""Modules shared by the IOD builders: SOP Common, Patient, General Study, Series, Equipment, Image, Frame of
Reference, Image Plane, Image Pixel and VOI LUT, filled from the keys the planner (bench.studies.series) draws.
The modules XA instances have too are bench.studies.header's; these add what the modalities beyond DSA ask."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from bench.studies import header
from bench.studies.generate import derived_uid
from bench.studies.header import StudyKeys
from bench.studies.profile import SeriesSpec, StudyProfile

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]


@dataclass(frozen=True)
class SeriesKeys:
    """What one series of a study shares."""

    series_uid: str
    series_number: int
    frame_of_reference_uid: str
    series_time: str


@dataclass(frozen=True)
class InstanceKeys:
    """What makes one instance of a series distinct."""

    sop_uid: str
    number: int  # Instance Number, from 1
    count: int  # instances in the series
    z: float  # position along the body, 0 (feet end) .. 1 (head end)
    acquisition_time: str

    @property
    def position_mm(self) -> float:
        return round(-600.0 + 900.0 * self.z, 3)


def new_instance(sop_class: str, instance: InstanceKeys, study: StudyKeys) -> Dataset:
    """An empty data set with file meta and SOP Common filled in."""
    ds = header.new_instance(sop_class, instance.sop_uid, study.study_date, instance.acquisition_time)
    ds.SpecificCharacterSet = "ISO_IR 100"
    return ds


def patient_and_study(ds: Dataset, study: StudyKeys, profile: StudyProfile) -> None:
    """Patient and General Study, the study described by its profile's description up to a colon."""
    header.patient_and_study(ds, study, f"{profile.description.split(':')[0]} (synthetic)"[:64])


def series_and_equipment(
    ds: Dataset, modality: str, spec: SeriesSpec, series: SeriesKeys, profile: StudyProfile, study: StudyKeys
) -> None:
    """General Series (with its date and time) and General Equipment; the device is named after the modality."""
    header.series_and_equipment(
        ds, modality, modality, series.series_uid, series.series_number, spec.description, profile.body_part
    )
    ds.SeriesDate = study.study_date
    ds.SeriesTime = series.series_time


def general_image(ds: Dataset, study: StudyKeys, instance: InstanceKeys, image_type: list[str]) -> None:
    """General Image of one instance of a series (acquisition 1)."""
    header.general_image(ds, image_type, instance.number, study.study_date, instance.acquisition_time)
    ds.AcquisitionNumber = 1


def frame_of_reference(ds: Dataset, series: SeriesKeys) -> None:
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""


def image_plane(ds: Dataset, spec: SeriesSpec, instance: InstanceKeys, orientation: list[float]) -> None:
    """Pixel spacing, orientation and the slice's position: slices `slice_thickness` apart along z."""
    ds.PixelSpacing = [spec.pixel_spacing, spec.pixel_spacing]
    ds.ImageOrientationPatient = orientation
    half = round(spec.pixel_spacing * spec.columns / 2, 3)
    position = round(instance.number * spec.slice_thickness, 3)
    ds.ImagePositionPatient = [-half, -half, position] if orientation == AXIAL else [-half, position, half]
    ds.SliceThickness = spec.slice_thickness
    ds.SliceLocation = position


def image_pixel(ds: Dataset, spec: SeriesSpec, signed: bool = False, photometric: str = "MONOCHROME2") -> None:
    ds.SamplesPerPixel = 3 if photometric.startswith(("RGB", "YBR")) else 1
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 8 if spec.bits_stored <= 8 else 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0


def voi_window(ds: Dataset, center: float, width: float, explanation: str = "") -> None:
    ds.WindowCenter = center
    ds.WindowWidth = width
    if explanation:
        ds.WindowCenterWidthExplanation = explanation


def item(**attributes) -> Dataset:
    """A sequence item with these attributes (keyword = value)."""
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    """A code sequence item (Code Value, Coding Scheme Designator, Code Meaning); SNOMED CT unless told."""
    return item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def multiframe_instance(
    sop_class: str,
    modality: str,
    image_type: list[str],
    spec: SeriesSpec,
    profile: StudyProfile,
    study: StudyKeys,
    series: SeriesKeys,
    inst: InstanceKeys,
) -> Dataset:
    """What every enhanced multi-frame instance here starts with (Enhanced CT, Enhanced MR, breast tomosynthesis):
    SOP common, patient and study, series and equipment with its device serial number, frame of reference, the
    image type and the content date and time."""
    ds = new_instance(sop_class, inst, study)
    patient_and_study(ds, study, profile)
    series_and_equipment(ds, modality, spec, series, profile, study)
    ds.DeviceSerialNumber = "0001"
    frame_of_reference(ds, series)
    ds.ImageType = image_type
    ds.InstanceNumber = inst.number
    ds.ContentDate = study.study_date
    ds.ContentTime = inst.acquisition_time
    return ds


def stack_frame_content(study: StudyKeys, n: int, duration_ms: float) -> list[Dataset]:
    """The Frame Content Sequence of frame `n` of one stack: its place in the dimensions stack_dimensions declares."""
    when = f"{study.study_date}{study.study_time}"
    return [
        item(
            FrameAcquisitionDateTime=when,
            FrameReferenceDateTime=when,
            FrameAcquisitionDuration=duration_ms,
            StackID="1",
            InStackPositionNumber=n,
            DimensionIndexValues=[1, n],
        )
    ]


def stack_dimensions(ds: Dataset, series: SeriesKeys) -> None:
    """Multi-frame Dimension: frames indexed by stack and by position in it (Stack ID, In-Stack Position Number)."""
    organization = derived_uid(series.series_uid, "dimension-organization")
    ds.DimensionOrganizationSequence = [item(DimensionOrganizationUID=organization)]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = [
        item(
            DimensionOrganizationUID=organization,
            DimensionIndexPointer=0x00209056,  # Stack ID
            FunctionalGroupPointer=0x00209111,  # Frame Content Sequence
            DimensionDescriptionLabel="Stack ID",
        ),
        item(
            DimensionOrganizationUID=organization,
            DimensionIndexPointer=0x00209057,  # In-Stack Position Number
            FunctionalGroupPointer=0x00209111,
            DimensionDescriptionLabel="In-Stack Position Number",
        ),
    ]


def multiframe_pixels_and_groups(
    ds: Dataset,
    spec: SeriesSpec,
    series: SeriesKeys,
    frames: int,
    shared: Dataset,
    per_frame: list[Dataset],
    signed: bool = False,
) -> None:
    """What every enhanced multi-frame instance here ends with: Image Pixel of `frames` frames (identity presentation,
    no burned-in annotation or recognizable features, not lossy until an encoder says so), an empty Acquisition
    Context, the shared and per-frame functional groups, and the dimensions of its one stack."""
    image_pixel(ds, spec, signed=signed)
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.NumberOfFrames = frames
    ds.AcquisitionContextSequence = []
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = per_frame
    stack_dimensions(ds, series)


def axial_stack_geometry(spec: SeriesSpec) -> dict[str, list[Dataset]]:
    """The shared functional groups' Pixel Measures and Plane Orientation of an axial stack of slices."""
    return {
        "PixelMeasuresSequence": [
            item(PixelSpacing=[spec.pixel_spacing, spec.pixel_spacing], SliceThickness=spec.slice_thickness)
        ],
        "PlaneOrientationSequence": [item(ImageOrientationPatient=AXIAL)],
    }


def axial_frame(spec: SeriesSpec, study: StudyKeys, n: int, duration_ms: float) -> dict[str, list[Dataset]]:
    """Frame Content and Plane Position of frame `n` of an axial stack: slices `slice_thickness` apart along z."""
    half = round(spec.pixel_spacing * spec.columns / 2, 3)
    return {
        "FrameContentSequence": stack_frame_content(study, n, duration_ms),
        "PlanePositionSequence": [item(ImagePositionPatient=[-half, -half, round(n * spec.slice_thickness, 3)])],
    }
