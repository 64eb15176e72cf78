"""WADO-RS out of the stored files: which instances a URL names, their metadata, and frames cut without re-encoding.

Instances go out as stored (the received dataset behind our file meta, without the trailing padding the archive
adds: storage.files), in the stored transfer syntax: the archive never transcodes. A frame of a native
(uncompressed) instance is a slice of its Pixel Data at a computed offset; a frame of an encapsulated one is its
fragments, found through the Basic (or Extended) Offset Table by pydicom. Deflated instances have no frames to cut:
406.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace

from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from server_under_test.storage.files import TRAILING_PADDING, received_length


class NotFound(LookupError):
    """Nothing stored matches the URL (404)."""


class NotAcceptable(ValueError):
    """The frames cannot be given without re-encoding (406)."""


@dataclass(frozen=True)
class Stored:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    transfer_syntax: str
    path: str
    size: int


SELECT = (
    "SELECT s.study_uid, r.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax, i.path, i.size "
    "FROM instance i JOIN series r ON r.series_key = i.series_key JOIN study s ON s.study_key = r.study_key"
)


def instances(db, study: str, series: str | None = None, sop: str | None = None) -> list[Stored]:
    """The stored instances a WADO-RS URL names, in the order they were stored; NotFound when none."""
    wheres, params = ["s.study_uid = ?"], [study]
    if series:
        wheres.append("r.series_uid = ?")
        params.append(series)
    if sop:
        wheres.append("i.sop_uid = ?")
        params.append(sop)
    rows = db.execute(f"{SELECT} WHERE {' AND '.join(wheres)} ORDER BY i.instance_key", params).fetchall()
    if not rows:
        raise NotFound("no such " + ("instance" if sop else "series" if series else "study"))
    return [Stored(*row) for row in rows]


def open_stored(db, stored: Stored):
    """The instance's file, opened; found again in the index when migration moved it meanwhile."""
    try:
        return open(stored.path, "rb")
    except FileNotFoundError:
        row = db.execute("SELECT path FROM instance WHERE sop_uid = ?", (stored.sop_uid,)).fetchone()
        if row is None:
            raise NotFound(f"instance {stored.sop_uid} was deleted") from None
        return open(row[0], "rb")


def _received_length(path: str) -> int:
    """The file's bytes as received (the archive's trailing padding left out: storage.files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return received_length(fd)
    finally:
        os.close(fd)


def on_disk(db, stored: list[Stored]) -> list[Stored]:
    """The instances whose files are there, with their paths and sizes as found now (migration may have moved a
    file since the query); those recycled meanwhile are left out."""
    found = []
    for instance in stored:
        try:
            size = _received_length(instance.path)
        except FileNotFoundError:
            row = db.execute("SELECT path FROM instance WHERE sop_uid = ?", (instance.sop_uid,)).fetchone()
            try:
                size = _received_length(row[0]) if row else -1
            except FileNotFoundError:
                size = -1
            if size < 0:
                continue
            instance = replace(instance, path=row[0])
        found.append(replace(instance, size=size))
    return found


def metadata(db, stored: Stored) -> dict:
    """The instance's attributes as DICOM JSON, without Pixel Data (binary values inline, base64)."""
    with open_stored(db, stored) as f:
        dataset = dcmread(f, stop_before_pixels=True)
    dataset.pop(TRAILING_PADDING, None)  # (read where there is no Pixel Data) the archive's, not the instance's
    return dataset.to_json_dict()


def metadata_of(db, stored: list[Stored]) -> list[dict]:
    return [metadata(db, instance) for instance in stored]


@dataclass(frozen=True)
class PixelLayout:
    transfer_syntax: UID
    value_offset: int  # where Pixel Data's value starts in the file
    value_length: int  # 0xFFFFFFFF when encapsulated
    frames: int
    frame_bytes: int  # native: bytes per frame


def pixel_layout(f) -> PixelLayout:
    """Where the frames are: pydicom reads the header and stops at Pixel Data's tag; its length is read here."""
    dataset = dcmread(f, stop_before_pixels=True)  # leaves the file at (7FE0,0010)'s first byte
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    if syntax == DeflatedExplicitVRLittleEndian:
        raise NotAcceptable("the instance is stored deflated: its frames would need re-encoding")
    start = f.tell()
    head = f.read(12)
    order = "<" if syntax.is_little_endian else ">"
    if len(head) < 8 or struct.unpack_from(order + "HH", head) != (0x7FE0, 0x0010):
        raise NotFound("the instance has no Pixel Data")
    if syntax.is_implicit_VR:
        (length,), header = struct.unpack_from(order + "I", head, 4), 8
    else:
        (length,), header = struct.unpack_from(order + "I", head, 8), 12
    frames = int(dataset.get("NumberOfFrames") or 1)
    bits = int(dataset.get("BitsAllocated") or 0)
    frame_bytes = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel") or 1) * bits // 8
    if not syntax.is_encapsulated and (bits % 8 or frame_bytes * frames > length):
        raise NotAcceptable("the Pixel Data's frames are not whole bytes apart (BitsAllocated 1, or short)")
    return PixelLayout(syntax, start + header, length, frames, frame_bytes)


def frames(db, stored: Stored, numbers: list[int]) -> tuple[UID, list[bytes]]:
    """The frames asked for (numbered from 1), as stored, and the stored transfer syntax."""
    with open_stored(db, stored) as f:
        layout = pixel_layout(f)
        for number in numbers:
            if not 1 <= number <= layout.frames:
                raise NotFound(f"frame {number} is outside 1-{layout.frames}")
        if not layout.transfer_syntax.is_encapsulated:
            fd = f.fileno()
            start = layout.value_offset
            return layout.transfer_syntax, [
                os.pread(fd, layout.frame_bytes, start + (n - 1) * layout.frame_bytes) for n in numbers
            ]
        out = []
        for number in numbers:
            f.seek(layout.value_offset)
            out.append(get_frame(f, number - 1, number_of_frames=layout.frames))
        return layout.transfer_syntax, out
