"""DICOM files as tests compare them: the dataset bytes after the file meta group, and fresh copies.

The archive's files may end with a trailing padding element it added (server_under_test.storage.files): a file's
bytes here are those it received, as retrieval sends them; files the archive did not write are read whole."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from server_under_test.storage.files import received_length


def dataset_bytes_of(data: bytes) -> bytes:
    """A DICOM file's dataset bytes (after the file meta group), from the file's bytes."""
    assert data[128:132] == b"DICM"
    meta_length = int.from_bytes(data[140:144], "little")
    return data[144 + meta_length :]


def received_bytes(path: Path) -> bytes:
    """A file's bytes without the trailing padding the archive adds to what it stores."""
    with open(path, "rb") as f:
        return f.read(received_length(f.fileno()))


def dataset_bytes(path: Path) -> bytes:
    """A DICOM file's dataset bytes (after the file meta group; for an archive's file, as it received them)."""
    return dataset_bytes_of(received_bytes(path))


def encoded(ds: Dataset) -> bytes:
    """The dataset bytes pydicom writes for `ds` (as they would be sent)."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dataset_bytes_of(buffer.getvalue())


def unique_copies(template_files: list[Path], studies: int) -> Iterator[tuple[str, Dataset]]:
    """Yield (study_uid, dataset) with fresh UIDs: `studies` studies built from the template files."""
    templates = [dcmread(p) for p in template_files]
    for _ in range(studies):
        study_uid = generate_uid()
        for template in templates:
            ds = template.copy()
            ds.file_meta = template.file_meta.copy()
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            yield study_uid, ds
