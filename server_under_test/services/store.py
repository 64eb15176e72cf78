"""C-STORE: parse the keys, write the file on a tier, index it, and only then answer success.

The dataset is written exactly as received (behind a file meta header naming the
negotiated transfer syntax); only the part before Pixel Data is parsed, for the index.
"""

from __future__ import annotations

import errno
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from server_under_test.services.keys import Incomplete, Malformed, read_keys
from server_under_test.storage.files import AlreadyStored, BadUID, TierSet, check_uid
from server_under_test.storage.index import AtCapacity, Index, InstanceRecord
from server_under_test.storage.recycling import Recycler
from server_under_test.upper_layer.association import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, Association
from server_under_test.upper_layer.dimse import file_meta_bytes
from server_under_test.upper_layer.messages import Message, MessageReader
from server_under_test.upper_layer.status import SUCCESS_CODE, is_done

log = logging.getLogger("server_under_test.services.store")

DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
AT_CAPACITY = "the archive is at capacity"
UNCLAIMED = 0  # the instance fits in free room; a claim (room recycling made for it alone) is a key above 0


@dataclass(frozen=True)
class StoreOutcome:
    status: int
    comment: str = ""
    size: int = 0


HEAD_BYTES = 1 << 16  # the attributes before Pixel Data almost always fit in the first 64 KB
MAX_KEY_BYTES = 16 << 20  # beyond this, a "header" is not a header
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def dataset_keys(head: bytes, incoming, transfer_syntax: UID) -> dict[str, str]:
    """The indexed attributes: from the first 64 KB received, else from the file on disk."""
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        with open(incoming.path, "rb") as f:
            f.seek(incoming.header_size)
            return read_keys(zlib.decompress(f.read(), -zlib.MAX_WBITS), implicit, little)
    try:
        return read_keys(head, implicit, little)
    except Incomplete:
        if incoming.received - incoming.header_size == len(head):
            raise Malformed("the dataset ends inside an element") from None
    with open(incoming.path, "rb") as f:  # the attributes run past the first 64 KB
        f.seek(incoming.header_size)
        try:
            return read_keys(f.read(min(MAX_KEY_BYTES, incoming.received - incoming.header_size)), implicit, little)
        except Incomplete:
            raise Malformed("no Pixel Data within the first 16 MB, or the dataset ends inside an element") from None


def _reason(error: OSError) -> str:
    return "disk full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (error.strerror or str(error))


def _frames(keys: dict[str, str]) -> int:
    try:
        return max(1, int(keys.get("NumberOfFrames") or 1))
    except ValueError:
        return 1


def file_header(sop_class: str, sop_uid: str, transfer_syntax: str, calling_ae: str) -> bytes:
    return file_meta_bytes(
        sop_class, sop_uid, transfer_syntax, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, calling_ae
    )


class StoreService:
    def __init__(self, index: Index, tiers: TierSet, duplicates: str, recycler: Recycler | None = None):
        self.index = index
        self.tiers = tiers
        self.duplicates = duplicates
        self.recycler = recycler  # at the index's capacity: None answers A700, a Recycler makes room

    def store(self, assoc: Association, message: Message, reader: MessageReader) -> StoreOutcome:
        """Stream the dataset to a temp file, then check, place, fsync, index; always reads the whole dataset."""
        command = message.command
        context = assoc.context(message.context_id)
        sop_class = str(command.get("AffectedSOPClassUID", ""))
        sop_uid = str(command.get("AffectedSOPInstanceUID", ""))
        if context is None or context.abstract_syntax != sop_class:
            reader.skip_dataset(message)
            return StoreOutcome(SOP_CLASS_NOT_SUPPORTED, f"no accepted presentation context for {sop_class}")
        try:  # it names the file and goes into its meta header: it must be a UID before anything is written
            check_uid(sop_uid, "AffectedSOPInstanceUID")
        except BadUID as exc:
            reader.skip_dataset(message)
            return StoreOutcome(DATASET_DOES_NOT_MATCH, str(exc))
        usage = self.index.tier_usage() if self.tiers.bounded else {}  # a query per store only when it matters
        candidates = self.tiers.candidates(usage)
        if not candidates:
            reader.skip_dataset(message)
            return StoreOutcome(OUT_OF_RESOURCES, "every storage tier is at capacity")
        transfer_syntax = UID(context.transfer_syntax[0])
        stores = [self.tiers.stores[t] for t in candidates]
        header = file_header(sop_class, sop_uid, transfer_syntax, assoc.calling_ae)
        # A tier whose file system fills up mid-stream hands the instance on to the next one.
        incoming = stores[0].incoming(header, HEAD_BYTES, stores[1:], transfer_syntax)
        try:
            reader.stream_dataset(message, incoming)
            incoming.finish()
        except BaseException:  # the association broke mid-dataset: nothing was acknowledged
            incoming.discard()
            raise
        if incoming.error is not None:
            incoming.discard()
            error = incoming.error
            reason = _reason(error)
            log.warning("cannot write %s on tier %s: %s", sop_uid, incoming.store.root, reason)
            return StoreOutcome(OUT_OF_RESOURCES, f"cannot store {sop_uid}: {reason}")
        tier = self.tiers.stores.index(incoming.store)
        try:
            outcome = self._place(incoming, incoming.head, tier, sop_class, sop_uid, transfer_syntax)
        except BaseException:  # never leave a temporary file (or its handle) behind
            incoming.discard()
            raise
        if not is_done(outcome.status) or outcome.size == 0:
            incoming.discard()
        incoming.release()
        return outcome

    def _place(self, incoming, head: bytes, tier: int, sop_class: str, sop_uid: str, transfer_syntax: UID):
        try:
            keys = dataset_keys(head, incoming, transfer_syntax)
        except (Malformed, ValueError, LookupError, zlib.error) as exc:
            return StoreOutcome(CANNOT_UNDERSTAND, f"dataset does not parse: {exc}"[:200])
        missing = [k for k in REQUIRED_UIDS if not keys.get(k)]
        if missing:
            return StoreOutcome(DATASET_DOES_NOT_MATCH, f"missing {', '.join(missing)}")
        study_uid, series_uid, dataset_sop_uid = (keys[k] for k in REQUIRED_UIDS)
        if dataset_sop_uid != sop_uid:
            return StoreOutcome(DATASET_DOES_NOT_MATCH, f"SOPInstanceUID {dataset_sop_uid} differs from the request")
        if self.duplicates != "overwrite" and self.index.exists(sop_uid):
            return self._duplicate()
        store = self.tiers.stores[tier]
        try:
            path = store.path_for(study_uid, series_uid, sop_uid)
        except BadUID as exc:
            return StoreOutcome(DATASET_DOES_NOT_MATCH, str(exc))
        claim = self._room_for(incoming.size, study_uid)
        if claim is None:
            return StoreOutcome(OUT_OF_RESOURCES, AT_CAPACITY)
        try:
            outcome = self._commit(incoming, keys, sop_uid, sop_class, transfer_syntax, tier, path, claim)
        except BaseException:
            self._release(claim)
            raise
        if not (is_done(outcome.status) and outcome.size):  # the claim was not consumed by a row
            self._release(claim)
        return outcome

    def _commit(self, incoming, keys, sop_uid, sop_class, transfer_syntax, tier, path: Path, claim: int):
        overwrite = self.duplicates == "overwrite"
        try:
            # Without overwrite the file stays locked until its row is in: see _over_taken_name.
            size = incoming.commit(path, replace=overwrite, sync_folder=False, hold=not overwrite)
        except AlreadyStored:
            return self._over_taken_name(incoming, keys, sop_uid, sop_class, transfer_syntax, tier, path, claim)
        except OSError as exc:
            return StoreOutcome(OUT_OF_RESOURCES, f"cannot store {sop_uid}: {_reason(exc)}")
        return self._index(keys, sop_uid, sop_class, transfer_syntax, tier, path, size, claim, incoming.name_durable)

    def _over_taken_name(self, incoming, keys, sop_uid, sop_class, transfer_syntax, tier, path: Path, claim: int):
        """The final name is taken, with the reject/keep-first policies. Either a store of the same instance is
        placing it (wait for it: its row, or its failure, decides), or a crash came between placing a file and
        committing its row. Then the index does not know the file, so answering "already stored" would acknowledge
        an instance the archive cannot return: replace the file with this one and commit the row."""
        held = incoming.store.lock_placed(path)
        try:
            if self.index.exists(sop_uid):
                return self._duplicate()
            log.warning("%s: a file without an index row (left by a crash) is replaced", sop_uid)
            try:
                size = incoming.replace_leftover(path, sync_folder=False)
            except OSError as exc:
                return StoreOutcome(OUT_OF_RESOURCES, f"cannot store {sop_uid}: {_reason(exc)}")
            return self._index(
                keys, sop_uid, sop_class, transfer_syntax, tier, path, size, claim, incoming.name_durable
            )
        finally:
            if held is not None:
                os.close(held)

    def _room_for(self, size: int, study_uid: str) -> int | None:
        """Room for the instance under the archive's capacity: UNCLAIMED, a claim, or None (A700).

        One read of the usage; when it shows no free room and the policy is recycle, the recycler
        makes room and claims it in one transaction. The index's group commit checks again.
        """
        if not self.index.capacity or self.index.free_bytes() >= size:
            return UNCLAIMED
        return self._claim(size, study_uid)

    def _claim(self, size: int, study_uid: str) -> int | None:
        return self.recycler.claim_room(size, study_uid) if self.recycler is not None else None

    def _release(self, claim: int) -> None:
        if claim != UNCLAIMED:
            self.recycler.release(claim)

    def _add(self, record: InstanceRecord, sync_dirs: tuple, claim: int) -> str | None:
        """Commit the row; when concurrent stores took the free room it counted on, claim room and commit once more.

        A row with a claim cannot lose its room, so the second attempt is the last.
        """
        try:
            return self.index.add(record, sync_dirs=sync_dirs, claim=claim)
        except AtCapacity:
            if claim != UNCLAIMED:
                raise
            claim = self._claim(record.size, record.study_uid)
            if claim is None:
                raise
        try:
            return self.index.add(record, sync_dirs=sync_dirs, claim=claim)
        except BaseException:
            self._release(claim)
            raise

    def _duplicate(self) -> StoreOutcome:
        if self.duplicates == "reject":
            return StoreOutcome(DUPLICATE_SOP_INSTANCE, "duplicate SOP Instance UID rejected by policy")
        return StoreOutcome(SUCCESS_CODE, "duplicate: the first copy is kept")

    def _index(
        self,
        keys: dict[str, str],
        sop_uid,
        sop_class,
        transfer_syntax,
        tier,
        path: Path,
        size: int,
        claim: int,
        name_durable: bool,
    ):
        """Commit the instance's row; `name_durable`: its file's name needs no fsync of the folder first."""
        k = keys.get
        record = InstanceRecord(
            patient_id=k("PatientID", ""),
            patient_name=k("PatientName", ""),
            birth_date=k("PatientBirthDate", ""),
            sex=k("PatientSex", ""),
            study_uid=keys["StudyInstanceUID"],
            study_date=k("StudyDate", ""),
            study_time=k("StudyTime", ""),
            accession=k("AccessionNumber", ""),
            study_id=k("StudyID", ""),
            study_description=k("StudyDescription", ""),
            referring=k("ReferringPhysicianName", ""),
            series_uid=keys["SeriesInstanceUID"],
            modality=k("Modality", ""),
            series_number=k("SeriesNumber", ""),
            body_part=k("BodyPartExamined", ""),
            series_description=k("SeriesDescription", ""),
            sop_uid=sop_uid,
            sop_class_uid=sop_class,
            instance_number=k("InstanceNumber", ""),
            transfer_syntax=str(transfer_syntax),
            frames=_frames(keys),
            size=size,
            tier=tier,
            path=str(path),
        )
        try:
            # Where the file's fsync did not already make its name durable, the index committer fsyncs the folder,
            # before the row.
            replaced = self._add(record, () if name_durable else (path.parent,), claim)
        except Exception as exc:  # never leave a file the index does not know about
            if self.duplicates != "overwrite" or not self.index.exists(sop_uid):
                self.tiers.stores[tier].remove(path)
            if isinstance(exc, AtCapacity):
                return StoreOutcome(OUT_OF_RESOURCES, AT_CAPACITY)
            log.error("index update failed for %s: %s", sop_uid, exc)
            return StoreOutcome(OUT_OF_RESOURCES, f"index update failed: {exc}"[:200])
        if replaced:
            old = Path(replaced)
            store = self.tiers.store_for_path(old)
            if store:
                store.remove(old)
        return StoreOutcome(SUCCESS_CODE, size=size)
