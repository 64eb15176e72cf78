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
from server_under_test.wire import Message

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


def parse_keys(head: bytes, incoming, transfer_syntax: UID):
    """The dataset up to Pixel Data (pydicom): from the first 64 KB, else from the file on disk."""
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        with open(incoming.path, "rb") as f:
            f.seek(incoming.header_size)
            inflated = zlib.decompress(f.read(), -zlib.MAX_WBITS)
        return read_dataset(BytesIO(inflated), implicit, little, stop_when=_StopAtPixels(), specific_tags=INDEXED_TAGS)
    stop = _StopAtPixels()
    complete = incoming.size - incoming.header_size == len(head)
    try:
        ds = read_dataset(BytesIO(head), implicit, little, stop_when=stop, specific_tags=INDEXED_TAGS)
        if stop.reached or complete:
            return ds
    except Exception:
        if complete:
            raise
    with open(incoming.path, "rb") as f:  # the keys run past the first 64 KB: read them from disk
        f.seek(incoming.header_size)
        return read_dataset(f, implicit, little, stop_when=_StopAtPixels(), specific_tags=INDEXED_TAGS)


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


def _drain(fragments) -> None:
    for _ in fragments:
        pass


class StoreService:
    def __init__(self, index: Index, tiers: TierSet, duplicates: str):
        self.index = index
        self.tiers = tiers
        self.duplicates = duplicates

    def store(self, assoc: Association, message: Message, fragments) -> StoreOutcome:
        """Stream the dataset to a temp file, then check, place, fsync, index; always drains `fragments`."""
        command = message.command
        context = assoc.context(message.context_id)
        sop_class = str(command.get("AffectedSOPClassUID", ""))
        sop_uid = str(command.get("AffectedSOPInstanceUID", ""))
        if context is None or context.abstract_syntax != sop_class:
            _drain(fragments)
            return StoreOutcome(SOP_CLASS_NOT_SUPPORTED, f"no accepted presentation context for {sop_class}")
        candidates = self.tiers.candidates(self.index.tier_usage())
        if not candidates:
            _drain(fragments)
            return StoreOutcome(OUT_OF_RESOURCES, "every storage tier is at capacity")
        transfer_syntax = UID(context.transfer_syntax[0])
        tier = candidates[0]
        incoming = self.tiers.stores[tier].incoming(file_header(sop_class, sop_uid, transfer_syntax, assoc.calling_ae))
        head = bytearray()
        for fragment in fragments:
            if len(head) < HEAD_BYTES:
                head += fragment[: HEAD_BYTES - len(head)]
            incoming.write(fragment)
        if incoming.error is not None:
            incoming.discard()
            error = incoming.error
            reason = "disk full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (error.strerror or str(error))
            log.warning("cannot write %s on tier %s: %s", sop_uid, self.tiers.tiers[tier].name, reason)
            return StoreOutcome(OUT_OF_RESOURCES, f"cannot store {sop_uid}: {reason}")
        outcome = self._place(incoming, bytes(head), tier, sop_class, sop_uid, transfer_syntax)
        if outcome.status != SUCCESS or outcome.size == 0:
            incoming.discard()
        return outcome

    def _place(self, incoming, head: bytes, tier: int, sop_class: str, sop_uid: str, transfer_syntax: UID):
        try:
            ds = parse_keys(head, incoming, transfer_syntax)
            study_uid, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            dataset_sop_uid = str(ds.SOPInstanceUID)
        except Exception as exc:  # pydicom raises many kinds on garbage: all mean "cannot understand"
            return StoreOutcome(CANNOT_UNDERSTAND, f"dataset does not parse: {type(exc).__name__}: {exc}"[:200])
        if dataset_sop_uid != sop_uid:
            return StoreOutcome(DATASET_DOES_NOT_MATCH, f"SOPInstanceUID {dataset_sop_uid} differs from the request")
        if self.duplicates != "overwrite" and self.index.exists(sop_uid):
            return self._duplicate()
        store = self.tiers.stores[tier]
        try:
            path = store.path_for(study_uid, series_uid, sop_uid)
            size = incoming.commit(path, replace=self.duplicates == "overwrite")
        except BadUID as exc:
            return StoreOutcome(DATASET_DOES_NOT_MATCH, str(exc))
        except AlreadyStored:
            return self._duplicate()
        except OSError as exc:
            reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
            return StoreOutcome(OUT_OF_RESOURCES, f"cannot store {sop_uid}: {reason}")
        return self._index(ds, sop_uid, sop_class, transfer_syntax, tier, path, size)

    def _duplicate(self) -> StoreOutcome:
        if self.duplicates == "reject":
            return StoreOutcome(DUPLICATE_SOP_INSTANCE, "duplicate SOP Instance UID rejected by policy")
        return StoreOutcome(SUCCESS, "duplicate: the first copy is kept")

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
