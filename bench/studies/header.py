"""The header modules every synthetic instance starts with, whatever its IOD (XA or bench.studies.iods):
SOP Common, Patient, General Study, General Series, General Equipment and General Image, filled from the
study keys the planners (bench.studies.generate, bench.studies.series) draw."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

MANUFACTURER = "pacsbench"


@dataclass(frozen=True)
class StudyKeys:
    """The patient and study attributes shared by every instance of one study."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_uid: str
    study_id: str
    accession: str
    study_date: str
    study_time: str


def new_instance(sop_class: str, sop_uid: str, creation_date: str, creation_time: str) -> Dataset:
    """A data set with its file meta and SOP Common (class, instance, creation date and time) filled in."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = creation_date
    ds.InstanceCreationTime = creation_time
    return ds


def patient_and_study(ds: Dataset, study: StudyKeys, description: str) -> None:
    """Patient and General Study modules."""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = "REFERRER^SYNTHETIC"
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    ds.StudyDescription = description


def series_and_equipment(
    ds: Dataset, modality: str, device: str, series_uid: str, series_number: int, description: str, body_part: str
) -> None:
    """General Series and General Equipment modules; `device` names the model ("synthetic DSA") and station."""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.BodyPartExamined = body_part
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = f"synthetic {device}"
    ds.InstitutionName = "pacsbench"
    ds.StationName = f"{device}1"
    ds.SoftwareVersions = "1"


def general_image(ds: Dataset, image_type: list[str], number: int, date: str, time: str) -> None:
    """General Image module: what the instance is, its number, when it was acquired and made."""
    ds.ImageType = image_type
    ds.InstanceNumber = number
    ds.ContentDate = date
    ds.ContentTime = time
    ds.AcquisitionDate = date
    ds.AcquisitionTime = time
    ds.BurnedInAnnotation = "NO"
