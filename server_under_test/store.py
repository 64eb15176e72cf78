"""C-STORE: parse the keys, write the file on a tier, index it, and only then answer success.

The dataset is written exactly as received (behind a file meta header naming the
negotiated transfer syntax); only the part before Pixel Data is parsed, for the index.
"""

from __future__ import annotations

import errno
import logging
import zlib
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from server_under_test.dimse import file_meta_bytes
from server_under_test.association import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, Association
from server_under_test.index import Index, InstanceRecord
from server_under_test.storage import AlreadyStored, BadUID, TierSet
from server_under_test.wire import ChunkReader, Message

log = logging.getLogger("server_under_test.store")

SUCCESS = 0x0000
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210

FIRST_PIXEL_TAG = 0x7FE00008  # Float Pixel Data and everything after it is never indexed


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    comment: str = ""
    size: int = 0


INDEXED_KEYWORDS = [
    "SpecificCharacterSet", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
    "SeriesInstanceUID", "Modality", "SeriesNumber", "BodyPartExamined", "SeriesDescription", "SOPInstanceUID",
    "InstanceNumber", "NumberOfFrames",
]
INDEXED_TAGS = [Tag(k) for k in INDEXED_KEYWORDS]
HEAD_BYTES = 1 << 16  # the part before Pixel Data almost always fits in the first 64 KB


class _StopAtPixels:
    def __init__(self):
        self.reached = False

    def __call__(self, tag, vr, length) -> bool:
        if tag >= FIRST_PIXEL_TAG:
            self.reached = True
        return self.reached


def parse_keys(chunks: list[memoryview], transfer_syntax: UID):
    """The dataset up to Pixel Data (pydicom), read straight from the received fragments.

    Fast path: parse a contiguous copy of the first 64 KB; only when the keys run past it
    (or the data is deflated) read through all fragments.
    """
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        inflated = zlib.decompress(ChunkReader(chunks).read(), -zlib.MAX_WBITS)
        return read_dataset(BytesIO(inflated), implicit, little, stop_when=_StopAtPixels(), specific_tags=INDEXED_TAGS)
    head, total = bytearray(), sum(len(c) for c in chunks)
    for chunk in chunks:
        head += chunk[: HEAD_BYTES - len(head)]
        if len(head) >= HEAD_BYTES:
            break
    if len(head) == total:
        return read_dataset(BytesIO(head), implicit, little, stop_when=_StopAtPixels(), specific_tags=INDEXED_TAGS)
    stop = _StopAtPixels()
    try:
        ds = read_dataset(BytesIO(head), implicit, little, stop_when=stop, specific_tags=INDEXED_TAGS)
        if stop.reached:
            return ds
    except Exception:  # the head ended inside an element: read the whole thing below
        pass
    return read_dataset(ChunkReader(chunks), implicit, little, stop_when=_StopAtPixels(), specific_tags=INDEXED_TAGS)


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _frames(ds) -> int:
    try:
        return int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1


def file_header(sop_class: str, sop_uid: str, transfer_syntax: str, calling_ae: str) -> bytes:
    return file_meta_bytes(sop_class, sop_uid, transfer_syntax, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION,
                           calling_ae)


class StoreService:
    def __init__(self, index: Index, tiers: TierSet, duplicates: str):
        self.index = index
        self.tiers = tiers
        self.duplicates = duplicates

    def store(self, assoc: Association, message: Message) -> StoreOutcome:
        command = message.command
        context = assoc.context(message.context_id)
        sop_class = str(command.get("AffectedSOPClassUID", ""))
        sop_uid = str(command.get("AffectedSOPInstanceUID", ""))
        if context is None or context.abstract_syntax != sop_class:
            return StoreOutcome(SOP_CLASS_NOT_SUPPORTED, f"no accepted presentation context for {sop_class}")
        transfer_syntax = UID(context.transfer_syntax[0])
        try:
            ds = parse_keys(message.data, transfer_syntax)
            study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            dataset_sop_uid = str(ds.SOPInstanceUID)
        except Exception as exc:  # pydicom raises many kinds on garbage: all mean "cannot understand"
            return StoreOutcome(CANNOT_UNDERSTAND, f"dataset does not parse: {type(exc).__name__}: {exc}"[:200])
        if dataset_sop_uid != sop_uid:
            return StoreOutcome(DATASET_DOES_NOT_MATCH, f"SOPInstanceUID {dataset_sop_uid} differs from the request")
        if self.duplicates != "overwrite" and self.index.exists(sop_uid):
            if self.duplicates == "reject":
                return StoreOutcome(DUPLICATE_SOP_INSTANCE, "duplicate SOP Instance UID rejected by policy")
            return StoreOutcome(SUCCESS, "duplicate: the first copy is kept")
        header = file_header(sop_class, sop_uid, transfer_syntax, assoc.calling_ae)
        return self._write_and_index(ds, study_uid, series_uid, sop_uid, sop_class, transfer_syntax,
                                     [header, *message.data])

    def _write_and_index(self, ds, study_uid, series_uid, sop_uid, sop_class, transfer_syntax, chunks) -> StoreOutcome:
        last_error = "no storage tier has room"
        for tier in self.tiers.candidates(self.index.tier_usage()):
            store = self.tiers.stores[tier]
            try:
                path = store.path_for(study_uid, series_uid, sop_uid)
            except BadUID as exc:
                return StoreOutcome(DATASET_DOES_NOT_MATCH, str(exc))
            try:
                size = store.write(path, chunks, replace=self.duplicates == "overwrite")
            except AlreadyStored:
                if self.duplicates == "reject":
                    return StoreOutcome(DUPLICATE_SOP_INSTANCE, "duplicate SOP Instance UID rejected by policy")
                return StoreOutcome(SUCCESS, "duplicate: the first copy is kept")
            except OSError as exc:
                last_error = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
                log.warning("cannot write %s on tier %s: %s", sop_uid, self.tiers.tiers[tier].name, last_error)
                continue  # the next tier may have room
            return self._index(ds, sop_uid, sop_class, transfer_syntax, tier, path, size)
        return StoreOutcome(OUT_OF_RESOURCES, f"cannot store {sop_uid}: {last_error}")

    def _index(self, ds, sop_uid, sop_class, transfer_syntax, tier, path: Path, size: int) -> StoreOutcome:
        record = InstanceRecord(
            patient_id=_text(ds, "PatientID"), patient_name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"), sex=_text(ds, "PatientSex"),
            study_uid=str(ds.StudyInstanceUID), study_date=_text(ds, "StudyDate"), study_time=_text(ds, "StudyTime"),
            accession=_text(ds, "AccessionNumber"), study_id=_text(ds, "StudyID"),
            study_description=_text(ds, "StudyDescription"), referring=_text(ds, "ReferringPhysicianName"),
            series_uid=str(ds.SeriesInstanceUID), modality=_text(ds, "Modality"),
            series_number=_text(ds, "SeriesNumber"), body_part=_text(ds, "BodyPartExamined"),
            series_description=_text(ds, "SeriesDescription"), sop_uid=sop_uid, sop_class_uid=sop_class,
            instance_number=_text(ds, "InstanceNumber"), transfer_syntax=str(transfer_syntax), frames=_frames(ds),
            size=size, tier=tier, path=str(path),
        )
        try:
            replaced = self.index.add(record)
        except Exception as exc:  # never leave a file the index does not know about
            if self.duplicates != "overwrite" or not self.index.exists(sop_uid):
                self.tiers.stores[tier].remove(path)
            log.error("index update failed for %s: %s", sop_uid, exc)
            return StoreOutcome(OUT_OF_RESOURCES, f"index update failed: {exc}"[:200])
        if replaced:
            old = Path(replaced)
            store = self.tiers.store_for_path(old)
            if store:
                store.remove(old)
        return StoreOutcome(SUCCESS, size=size)
