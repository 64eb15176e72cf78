"""Ultrasound Multi-frame Image IOD: cine loops in colour (RGB samples, YBR_FULL_422 once JPEG baseline encodes them).

Modules: Patient, General Study, General Series, General Equipment, General Image, Image Pixel,
Cine, Multi-frame, US Image, VOI LUT, SOP Common. Grey-scale echoes in a sector with a colour
bar of annotations-free Doppler hue in one corner, so the three channels differ as in real
cine loops; frames are 8-bit, as ultrasound writes them.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UltrasoundMultiFrameImageStorage

from bench.studies import anatomy
from bench.studies.header import StudyKeys
from bench.studies.iods.common import (
    InstanceKeys,
    SeriesKeys,
    general_image,
    image_pixel,
    new_instance,
    patient_and_study,
    series_and_equipment,
)
from bench.studies.profile import SeriesSpec, StudyProfile

SOP_CLASS = UltrasoundMultiFrameImageStorage
FRAME_RATE = 30.0


def header(
    spec: SeriesSpec, profile: StudyProfile, study: StudyKeys, series: SeriesKeys, inst: InstanceKeys, frames: int
) -> Dataset:
    ds = new_instance(SOP_CLASS, inst, study)
    patient_and_study(ds, study, profile)
    series_and_equipment(ds, "US", spec, series, profile, study)
    general_image(ds, study, inst, ["ORIGINAL", "PRIMARY", "TRANSTHORACIC", "0001"])
    ds.PatientOrientation = ""
    image_pixel(ds, spec, photometric="RGB")
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = round(1000.0 / FRAME_RATE, 3)
    ds.CineRate = int(FRAME_RATE)
    ds.RecommendedDisplayFrameRate = int(FRAME_RATE)
    ds.LossyImageCompression = "00"
    ds.TransducerData = ["C5-1", "", ""]
    ds.ProcessingFunction = "CARDIAC"
    return ds


def pixels(spec: SeriesSpec, z: float, rng: np.random.Generator, frames: int = 1) -> np.ndarray:
    """A cine loop (frames, rows, columns, 3) uint8: speckle in a sector, one beat over the loop."""
    out = np.empty((frames, spec.rows, spec.columns, 3), dtype=np.uint8)
    loop = anatomy.UltrasoundLoop(spec.rows, spec.columns, rng)
    for i in range(frames):
        grey = loop.frame(i / frames) * 255.0
        out[i] = np.clip(grey, 0, 255).astype(np.uint8)[..., None]
        box = out[i, spec.rows // 3 : spec.rows // 2, spec.columns // 2 : spec.columns * 2 // 3]
        flow = (128 + 100 * np.sin(2 * np.pi * (i / frames + np.arange(box.shape[1]) / box.shape[1]))).astype(np.uint8)
        box[..., 0] = np.maximum(box[..., 0], flow)  # red towards the probe, blue away
        box[..., 2] = np.maximum(box[..., 2], 255 - flow)
    return out
