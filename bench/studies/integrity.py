"""Dataset digests: what was sent and what came back are compared by these.

A digest is SHA-256 over two SHA-256s: of the bytes before the top-level Pixel Data
element, and of the rest. Any changed byte changes it, and a sender never hashes pixels
per copy: every copy of a pool instance shares its template's pixel bytes, hashed once
(hashing 2 MB costs ~8 ms here, more than storing it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.filereader import read_dataset
from pydicom.uid import UID

PIXEL_DATA = 0x7FE00010


def combine(head_sha256: bytes, rest_sha256: bytes) -> str:
    return hashlib.sha256(head_sha256 + rest_sha256).hexdigest()


def sha256_of(chunks) -> bytes:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


def pixel_data_offset(data: bytes | memoryview, transfer_syntax: str) -> int:
    """Where the top-level Pixel Data element starts (len(data) when there is none)."""
    syntax = UID(transfer_syntax)
    fp = BytesIO(data)
    read_dataset(
        fp, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=lambda tag, vr, length: tag == PIXEL_DATA
    )
    return fp.tell() if fp.tell() < len(data) else len(data)


def dataset_digest(data: bytes | memoryview, transfer_syntax: str) -> str:
    """The digest of an encoded dataset as received (no file meta)."""
    view = memoryview(data)
    split = pixel_data_offset(view, transfer_syntax)
    return combine(sha256_of([view[:split]]), sha256_of([view[split:]]))


# A Part 10 file's data set starts after the preamble and DICM (132 bytes), the File Meta Information Group Length
# element (12 bytes) and the group it counts.
PART10_FIXED = 132 + 12


@dataclass(frozen=True)
class ReceivedFile:
    """A Part 10 file as received (a WADO-RS part): which instance, and its data set's size and digest
    (the digest only when asked: hashing costs more than receiving)."""

    sop_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    frames: int
    bytes: int  # of the data set, without preamble and file meta: what a C-STORE or C-GET carries
    digest: str


def received_file(data: bytes | memoryview, with_digest: bool) -> ReceivedFile:
    """The facts of a received Part 10 file (pydicom reads its header, not its pixels)."""
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    meta = ds.file_meta
    syntax = str(meta.TransferSyntaxUID)
    dataset = memoryview(data)[PART10_FIXED + int(meta.FileMetaInformationGroupLength) :]
    return ReceivedFile(
        sop_instance_uid=str(ds.get("SOPInstanceUID", meta.get("MediaStorageSOPInstanceUID", ""))),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        transfer_syntax_uid=syntax,
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        bytes=len(dataset),
        digest=dataset_digest(dataset, syntax) if with_digest else "",
    )
