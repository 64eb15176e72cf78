"""Build complete X-Ray Angiographic (XA) multi-frame instances around synthetic pixels.

The module list follows the XA IOD: Patient, General Study, General Series, General
Equipment, General Image, Image Pixel, Multi-frame, Cine, Mask, Display Shutter, X-Ray
Image, X-Ray Acquisition, XA Positioner, Contrast/Bolus, Modality LUT (for LOG data),
VOI LUT, SOP Common. The values are plausible for a cerebral DSA run; `dciodvfy` reports
neither errors nor warnings on the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import XRayAngiographicImageStorage

from bench.studies.encode import SYNTAXES, attach_pixel_data, native_pixel_data
from bench.studies.header import StudyKeys, general_image, new_instance, patient_and_study, series_and_equipment
from bench.studies.pixels import FIELD_OF_VIEW, LOG_RANGE, RunShape

STUDY_DESCRIPTION = "Cerebral angiography (synthetic)"


@dataclass(frozen=True)
class RunKeys:
    """The attributes that make one run (one series, one instance) distinct."""

    series_uid: str
    sop_uid: str
    series_number: int
    acquisition_time: str
    primary_angle: float
    secondary_angle: float


def _image(ds: Dataset, study: StudyKeys, run: RunKeys) -> None:
    general_image(ds, ["ORIGINAL", "PRIMARY", "SINGLE PLANE"], 1, study.study_date, run.acquisition_time)
    ds.PatientOrientation = ""
    ds.LossyImageCompression = "00"


def _pixel_module(ds: Dataset, shape: RunShape) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = shape.rows
    ds.Columns = shape.columns
    ds.BitsAllocated = shape.bits_allocated
    ds.BitsStored = shape.bits_stored
    ds.HighBit = shape.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = shape.intensity
    ds.NumberOfFrames = shape.frames


@lru_cache(maxsize=8)
def log_to_linear_lut(bits_stored: int) -> bytes:
    """Modality LUT data turning LOG stored values back into linear intensity.

    Stored value p = top * (1 - attenuation / LOG_RANGE) (see bench.studies.pixels), so the
    intensity is exp((p / top - 1) * LOG_RANGE); the brightest value maps to 65535, which
    uses the full 16-bit range the descriptor declares (dciodvfy checks that).
    """
    top = (1 << bits_stored) - 1
    stored = np.arange(top + 1, dtype=np.float64)
    return np.round(65535.0 * np.exp((stored / top - 1.0) * LOG_RANGE)).astype("<u2").tobytes()


def _modality_lut(ds: Dataset, shape: RunShape) -> None:
    """LOG data needs a Modality LUT back to linear intensity (XA Modality LUT macro)."""
    if shape.intensity != "LOG":
        return
    lut = Dataset()
    lut.LUTDescriptor = [1 << shape.bits_stored, 0, 16]
    lut.ModalityLUTType = "US"  # unspecified units: relative detected intensity
    lut.LUTExplanation = "LOG to linear intensity"
    lut.LUTData = log_to_linear_lut(shape.bits_stored)
    lut["LUTData"].VR = "OW"
    ds.ModalityLUTSequence = [lut]


def _cine_and_mask(ds: Dataset, shape: RunShape, frame_rate: float) -> None:
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = round(1000.0 / frame_rate, 3)
    ds.CineRate = int(round(frame_rate))
    ds.RecommendedDisplayFrameRate = int(round(frame_rate))
    ds.StartTrim = 1
    ds.StopTrim = shape.frames
    mask = Dataset()
    mask.MaskOperation = "AVG_SUB"
    mask.MaskFrameNumbers = list(range(1, shape.mask_frames + 1))
    mask.ContrastFrameAveraging = 1
    mask.MaskSubPixelShift = [0.0, 0.0]
    ds.MaskSubtractionSequence = [mask]
    ds.RecommendedViewingMode = "SUB"


def _shutter(ds: Dataset, shape: RunShape) -> None:
    ds.ShutterShape = "CIRCULAR"
    ds.CenterOfCircularShutter = [shape.rows // 2, shape.columns // 2]
    ds.RadiusOfCircularShutter = int(min(shape.rows, shape.columns) * FIELD_OF_VIEW)  # the circle the pixels show


def _acquisition(ds: Dataset, shape: RunShape, run: RunKeys, frame_rate: float) -> None:
    ds.KVP = 80
    ds.RadiationSetting = "GR"
    ds.RadiationMode = "PULSED"
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = int(round(shape.frames * 1000.0 / frame_rate))
    ds.Exposure = 20
    ds.AveragePulseWidth = 8.0
    ds.FieldOfViewShape = "ROUND"
    ds.FieldOfViewDimensions = [240]
    pixel_mm = 240.0 / max(shape.rows, shape.columns)
    ds.ImagerPixelSpacing = [round(pixel_mm, 6), round(pixel_mm, 6)]
    ds.FocalSpots = [0.6]
    ds.IntensifierSize = 300.0
    ds.DistanceSourceToDetector = 1100.0
    ds.DistanceSourceToPatient = 780.0
    ds.EstimatedRadiographicMagnificationFactor = round(1100.0 / 780.0, 6)
    ds.PositionerMotion = "STATIC"
    ds.PositionerPrimaryAngle = run.primary_angle
    ds.PositionerSecondaryAngle = run.secondary_angle


def _contrast(ds: Dataset) -> None:
    ds.ContrastBolusAgent = "IOPAMIDOL 300"
    ds.ContrastBolusRoute = "IA"
    ds.ContrastBolusVolume = 8.0
    ds.ContrastBolusIngredient = "IODINE"
    ds.ContrastBolusIngredientConcentration = 300.0


def _voi(ds: Dataset, shape: RunShape) -> None:
    """A window over the whole range, in the units the Modality LUT (if any) produces."""
    top = 65535 if shape.intensity == "LOG" else shape.max_value
    ds.WindowCenter = (top + 1) // 2
    ds.WindowWidth = top + 1


def build_header(shape: RunShape, study: StudyKeys, run: RunKeys, frame_rate: float, body_part: str) -> Dataset:
    """A complete XA multi-frame dataset (with file meta) for one run, without Pixel Data."""
    ds = new_instance(XRayAngiographicImageStorage, run.sop_uid, study.study_date, run.acquisition_time)
    patient_and_study(ds, study, STUDY_DESCRIPTION)
    description = f"DSA run {run.series_number}"
    series_and_equipment(ds, "XA", "DSA", run.series_uid, run.series_number, description, body_part)
    _image(ds, study, run)
    _pixel_module(ds, shape)
    _cine_and_mask(ds, shape, frame_rate)
    _shutter(ds, shape)
    _acquisition(ds, shape, run, frame_rate)
    _contrast(ds)
    _modality_lut(ds, shape)
    _voi(ds, shape)
    return ds


def build_instance(
    pixels: np.ndarray,
    shape: RunShape,
    study: StudyKeys,
    run: RunKeys,
    frame_rate: float,
    body_part: str,
) -> Dataset:
    """Return a complete XA multi-frame dataset (with file meta), uncompressed."""
    ds = build_header(shape, study, run, frame_rate, body_part)
    attach_pixel_data(ds, native_pixel_data(pixels), SYNTAXES["explicit"])
    return ds
