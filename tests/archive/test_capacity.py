"""A bounded archive: capacity, A700 at the limit (reject) or the oldest studies recycled (recycle).

The storage layer alone (the index's bound, the recycle order), then the real archive
process with pynetdicom as the peer for C-STORE, C-FIND and C-GET.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sqlite3
import subprocess
import threading
import time
import urllib.request
from typing import NamedTuple

import pytest
from helpers.archive import leave_responses_to_the_sender, start_archive
from helpers.tools import require_tool
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    XRayAngiographicImageStorage,
)

from server_under_test.config import Tier
from server_under_test.storage.files import TierSet
from server_under_test.storage.index import (
    AtCapacity,
    Index,
    InstanceRecord,
    create_schema,
    index_path,
    recycled_totals,
)
from server_under_test.storage.recycling import Recycler

UID_ROOT = "1.2.826.0.1.3680043.10.1137"  # fixed-length UIDs below keep every instance the same size
PIXEL_BYTES = 150_000
AT_CAPACITY = 0xA700


# -- the storage layer ----------------------------------------------------------------------
def _record(study: int, number: int, tiers: TierSet, size: int = 100) -> InstanceRecord:
    """An index row for a file of `size` bytes, written at its place on the first tier."""
    study_uid, series_uid, sop_uid = _uids(study, number)
    path = tiers.stores[0].path_for(study_uid, series_uid, sop_uid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(size))
    return InstanceRecord(
        patient_id=f"P{study}",
        patient_name="DOE^JANE",
        birth_date="",
        sex="",
        study_uid=study_uid,
        study_date="20250101",
        study_time="",
        accession="",
        study_id="",
        study_description="",
        referring="",
        series_uid=series_uid,
        modality="XA",
        series_number="1",
        body_part="",
        series_description="",
        sop_uid=sop_uid,
        sop_class_uid=XRayAngiographicImageStorage,
        instance_number=str(number),
        transfer_syntax=ExplicitVRLittleEndian,
        frames=1,
        size=size,
        tier=0,
        path=str(path),
    )


@pytest.fixture
def storage(tmp_path):
    create_schema(tmp_path / "index.sqlite")
    tiers = TierSet((Tier("tier1", tmp_path / "storage"),), fsync=False, direct_io=False)
    index = Index(tmp_path / "index.sqlite", capacity=1000)
    yield index, tiers
    index.close()


def test_the_index_commits_no_row_past_its_capacity(storage):
    index, tiers = storage
    for number in range(10):
        index.add(_record(1, number, tiers))
    with pytest.raises(AtCapacity):
        index.add(_record(1, 10, tiers))
    index.add(_record(1, 3, tiers))  # storing an instance again takes no more room
    assert index.count_instances() == 10 and index.used_bytes() == 1000


def test_recycling_takes_quiet_studies_first_then_the_oldest_never_the_incoming_one(storage, tmp_path):
    index, tiers = storage
    for study in (1, 2, 3, 4):  # stored in this order, 200 bytes each: 800 of 1000 used
        for number in (1, 2):
            index.add(_record(study, number, tiers))
    with sqlite3.connect(index.path) as db:  # studies 2 and 3 have been quiet for an hour; 1 and 4 are busy
        db.execute(
            "UPDATE study SET updated_at = updated_at - 3600 WHERE study_uid IN (?, ?)",
            (_uids(2, 0)[0], _uids(3, 0)[0]),
        )
    recycler = Recycler(index.path, tiers, 1000, quiet_seconds=60)

    assert _room(recycler, 300, _uids(1, 0)[0])  # 800 + 300 > 1000: one study goes, the oldest quiet one
    assert _studies(index) == [_uids(1, 0)[0], _uids(3, 0)[0], _uids(4, 0)[0]]
    assert _room(recycler, 700, _uids(1, 0)[0])  # then 3 (quiet), then 4 (busy), never 1 (the incoming one)
    assert _studies(index) == [_uids(1, 0)[0]]
    assert not _room(recycler, 900, _uids(1, 0)[0])  # only the incoming study is left: nothing can go
    assert _studies(index) == [_uids(1, 0)[0]]

    assert index.used_bytes() == 200 and index.tier_usage() == {0: (200, 2)}
    assert set(tiers.stores[0].root.rglob("*.dcm")) == {tiers.stores[0].path_for(*_uids(1, n)) for n in (1, 2)}
    assert not (tiers.stores[0].root / _uids(2, 0)[0]).exists()  # emptied folders go too
    with sqlite3.connect(index.path) as db:
        assert recycled_totals(db) == {"studies": 3, "instances": 6, "bytes": 600}
        assert db.execute("SELECT patient_id, num_studies, num_series, num_instances FROM patient").fetchall() == [
            ("P1", 1, 1, 2)
        ]
        assert db.execute("SELECT COUNT(*) FROM series").fetchone()[0] == 1


def test_recycling_that_cannot_make_room_keeps_everything(storage):
    index, tiers = storage
    for number in range(5):
        index.add(_record(1, number, tiers))
    index.add(_record(2, 0, tiers))
    recycler = Recycler(index.path, tiers, 1000)
    assert recycler.claim_room(1001) is None  # larger than the whole archive
    assert recycler.claim_room(700, _uids(1, 0)[0]) is None  # recycling study 2 frees 100 of the 300 missing
    assert index.count_instances() == 6 and len(list(tiers.stores[0].root.rglob("*.dcm"))) == 6


def test_room_made_by_recycling_is_claimed_so_no_other_store_can_take_it(storage):
    index, tiers = storage
    for study in (1, 2):  # 500 bytes each: the archive is full
        for number in range(5):
            index.add(_record(study, number, tiers))
    recycler = Recycler(index.path, tiers, 1000)
    claim = recycler.claim_room(300, _uids(3, 0)[0])  # study 1 goes: 500 bytes free, 300 of them claimed
    assert claim and _studies(index) == [_uids(2, 0)[0]] and index.free_bytes() == 200
    with pytest.raises(AtCapacity):  # another store cannot take the claimed room...
        index.add(_record(4, 0, tiers, size=300))
    index.add(_record(4, 1, tiers, size=200))  # ...only the free room
    index.add(_record(3, 0, tiers, size=300), claim=claim)  # the store that claimed it commits into it
    assert index.used_bytes() == 1000 and index.free_bytes() == 0
    unused = recycler.claim_room(100, _uids(5, 0)[0])  # study 2 goes for a store that then fails...
    recycler.release(unused)  # ...and gives its claim back
    assert index.free_bytes() == 500 and _studies(index) == [_uids(4, 0)[0], _uids(3, 0)[0]]


def test_a_claim_left_by_a_crashed_store_lapses_and_an_archive_start_forgets_every_claim(storage, tmp_path):
    index, tiers = storage
    index.add(_record(1, 0, tiers, size=600))
    with sqlite3.connect(index.path) as db:  # one claim that has lapsed, one a killed worker left behind
        db.execute(
            "INSERT INTO claim(bytes, expires_at) VALUES (300, ?), (200, ?)", (time.time() - 1, time.time() + 600)
        )
    assert index.free_bytes() == 200  # the lapsed claim holds nothing; the other still does, until a start
    data = tmp_path / "archive-data"  # an archive whose index holds these claims, as a crash leaves it
    data.mkdir()
    with sqlite3.connect(index.path) as source, sqlite3.connect(index_path(data)) as copy:
        source.backup(copy)
        assert copy.execute("SELECT COUNT(*) FROM claim").fetchone()[0] == 2
    restarted = start_archive(data, "--capacity", "1000")
    restarted.stop()
    with sqlite3.connect(restarted.index) as db:
        assert db.execute("SELECT bytes FROM claim").fetchall() == []
        assert db.execute("SELECT SUM(bytes) FROM tier_usage").fetchone()[0] == 600


def _room(recycler: Recycler, size: int, study_uid: str) -> bool:
    """Can the recycler make room for `size` bytes (the claim given back at once, as by a store that failed)?"""
    claim = recycler.claim_room(size, study_uid)
    if claim is not None:
        recycler.release(claim)
    return claim is not None


def _studies(index: Index) -> list[str]:
    return [uid for (uid,) in index.reader.execute("SELECT study_uid FROM study ORDER BY study_key")]


# -- the archive process ----------------------------------------------------------------------
def _uids(study: int, number: int) -> tuple[str, str, str]:
    study_uid = f"{UID_ROOT}.{1000 + study}"
    return study_uid, f"{study_uid}.1", f"{study_uid}.1.{1000 + number}"


def _instance(study: int, number: int, pixel_bytes: int = PIXEL_BYTES) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = XRayAngiographicImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = _uids(study, number)
    ds.PatientID = f"P{1000 + study}"
    ds.PatientName = "CAPACITY^TEST"
    ds.Modality = "XA"
    ds.add_new(0x7FE00010, "OB", random.Random(study * 1000 + number).randbytes(pixel_bytes))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _sent_bytes(ds: Dataset) -> bytes:
    """The dataset as pynetdicom puts it on the wire (and the archive keeps it)."""
    return encode(ds, False, True)


def _peer() -> AE:
    ae = AE(ae_title="CAPACITYSCU")
    ae.add_requested_context(XRayAngiographicImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    return ae


class Peer:
    """One association to the archive: C-STORE, C-FIND at STUDY and IMAGE level, C-GET of a study."""

    def __init__(self, archive):
        self.received: dict[str, bytes] = {}
        self.assoc = _peer().associate(
            "127.0.0.1",
            archive.port,
            ae_title=archive.ae_title,
            ext_neg=[build_role(XRayAngiographicImageStorage, scu_role=True, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        assert self.assoc.is_established
        leave_responses_to_the_sender(self.assoc)

    def _on_store(self, event) -> int:
        self.received[event.request.AffectedSOPInstanceUID] = event.request.DataSet.getvalue()
        return 0x0000

    def store(self, ds: Dataset) -> int:
        return self.assoc.send_c_store(ds).Status

    def find(self, level: str, study_uid: str = "") -> list[Dataset]:
        query = Dataset()
        query.QueryRetrieveLevel = level
        query.StudyInstanceUID = study_uid
        if level == "IMAGE":
            query.SOPInstanceUID = ""
        matches = []
        for status, identifier in self.assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            assert status.Status in (0x0000, 0xFF00, 0xFF01), hex(status.Status)
            if identifier is not None:
                matches.append(identifier)
        return matches

    def get_study(self, study_uid: str) -> dict[str, bytes]:
        self.received = {}
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        final = [s for s, _ in self.assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)][-1]
        assert final.Status == 0x0000 and final.get("NumberOfFailedSuboperations", 0) == 0
        return self.received

    def release(self) -> None:
        self.assoc.release()


def _status(archive) -> dict:
    with urllib.request.urlopen(f"{archive.metrics_url}/status", timeout=10) as answer:
        return json.load(answer)


def _metrics(archive) -> dict:
    """The archive's Prometheus samples: by name when they have no labels, else by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{archive.metrics_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))) if s.labels else s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _files_on_tier(archive) -> dict[str, int]:
    """Every file under the default tier (temp files included) and its size."""
    sizes = {}
    for folder, _, names in os.walk(archive.data / "storage"):
        for name in names:
            try:
                sizes[os.path.join(folder, name)] = os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # deleted while we looked
                pass
    return sizes


def _indexed(archive) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(archive.index) as db:
        return {sop: (path, size) for sop, path, size in db.execute("SELECT sop_uid, path, size FROM instance")}


def _bounded_archive(tmp_path, capacity: int, at_capacity: str):
    return start_archive(
        tmp_path / "archive", "--capacity", str(capacity), "--at-capacity", at_capacity, "--metrics-port", "0"
    )


def test_a_full_archive_answers_a700_and_keeps_only_what_it_acknowledged(tmp_path):
    capacity = 1_000_000
    archive = _bounded_archive(tmp_path, capacity, "reject")
    try:
        peer = Peer(archive)
        statuses = {ds.SOPInstanceUID: peer.store(ds) for ds in (_instance(s, n) for s in (1, 2) for n in range(5))}
        small = _instance(3, 0, pixel_bytes=1000)  # the capacity refuses what would pass it, not what fits
        statuses[small.SOPInstanceUID] = peer.store(small)
        acknowledged = {sop for sop, status in statuses.items() if status == 0}
        found = {i.SOPInstanceUID for study in (1, 2, 3) for i in peer.find("IMAGE", _uids(study, 0)[0])}
        peer.release()
        status = _status(archive)
    finally:
        archive.stop()

    indexed = _indexed(archive)
    instance_size = indexed[_uids(1, 0)[2]][1]
    fit = capacity // instance_size
    assert list(statuses.values()) == [0] * fit + [AT_CAPACITY] * (10 - fit) + [0]
    assert set(indexed) == acknowledged == found
    assert _files_on_tier(archive) == {path: size for path, size in indexed.values()}  # no temp or stray file
    used = sum(size for _, size in indexed.values())
    assert used <= capacity
    assert status["capacity"] == {
        "capacity_bytes": capacity,
        "at_capacity": "reject",
        "used_bytes": used,
        "recycled_studies": 0,
        "recycled_instances": 0,
        "recycled_bytes": 0,
    }


class UsageWatch:
    """Reads the index's bytes stored (and those claimed) as often as it can, keeping the largest seen."""

    def __init__(self, archive):
        self.archive, self.largest_used, self.largest_committed, self.stop = archive, 0, 0, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        db = sqlite3.connect(self.archive.index)
        try:
            while not self.stop.is_set():
                used, claimed = db.execute(
                    "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM tier_usage), "
                    "(SELECT COALESCE(SUM(bytes), 0) FROM claim)"
                ).fetchone()
                self.largest_used = max(self.largest_used, used)
                self.largest_committed = max(self.largest_committed, used + claimed)
        finally:
            db.close()

    def finish(self) -> tuple[int, int]:
        self.stop.set()
        self.thread.join()
        return self.largest_used, self.largest_committed


def test_recycling_keeps_the_newest_studies_bit_exact_within_the_capacity(tmp_path):
    capacity, studies, per_study = 2_000_000, 14, 3  # about 3 times the capacity in all
    archive = _bounded_archive(tmp_path, capacity, "recycle")
    sent: dict[int, dict[str, bytes]] = {}
    try:
        peer = Peer(archive)
        watch = UsageWatch(archive)
        after_each_store = []
        statuses = []
        for study in range(studies):
            sent[study] = {}
            for number in range(per_study):
                ds = _instance(study, number)
                statuses.append(peer.store(ds))
                sent[study][ds.SOPInstanceUID] = _sent_bytes(ds)
                after_each_store.append(sum(_files_on_tier(archive).values()))
        largest_used, largest_committed = watch.finish()
        listed = [s.StudyInstanceUID for s in peer.find("STUDY")]
        retrieved = {study: peer.get_study(_uids(study, 0)[0]) for study in range(studies)}
        peer.release()
        status = _status(archive)
        metrics = _metrics(archive)
    finally:
        archive.stop()

    indexed = _indexed(archive)
    instance_size = next(iter(indexed.values()))[1]
    survivors = _survivors(studies, per_study, instance_size, capacity)
    assert statuses == [0] * studies * per_study
    assert survivors[-1] == studies - 1 and len(survivors) < studies
    assert sorted(listed) == [_uids(s, 0)[0] for s in survivors]
    for study in range(studies):
        assert retrieved[study] == (sent[study] if study in survivors else {})  # bit-exact, or nothing at all
    assert _files_on_tier(archive) == {path: size for path, size in indexed.values()}
    # Bytes on disk between stores; while one is in flight, the index's (no walk of a folder tree being changed
    # is a snapshot: it can count a recycled study's files and also the instance placed after they went).
    assert max(after_each_store) <= capacity and largest_used <= largest_committed <= capacity
    gone = studies - len(survivors)
    assert status["capacity"] == {
        "capacity_bytes": capacity,
        "at_capacity": "recycle",
        "used_bytes": len(indexed) * instance_size,
        "recycled_studies": gone,
        "recycled_instances": gone * per_study,
        "recycled_bytes": gone * per_study * instance_size,
    }
    assert metrics["pacsbench_archive_recycled_studies_total"] == gone
    assert metrics["pacsbench_archive_recycled_instances_total"] == gone * per_study
    assert metrics["pacsbench_archive_recycled_bytes_total"] == gone * per_study * instance_size
    assert metrics["pacsbench_archive_capacity_bytes"] == capacity


def _survivors(studies: int, per_study: int, instance_size: int, capacity: int) -> list[int]:
    """The studies a sequential store of `studies` x `per_study` instances leaves, by the recycle rule."""
    kept: dict[int, int] = {}  # study -> instances, oldest first
    for study in range(studies):
        for _ in range(per_study):
            while (sum(kept.values()) + 1) * instance_size > capacity:
                del kept[next(s for s in kept if s != study)]
            kept[study] = kept.get(study, 0) + 1
    return list(kept)


def test_concurrent_stores_recycle_consistently_across_workers(tmp_path):
    """Four DCMTK storescu at once over two worker processes, each its own studies, about 3 times the capacity.

    It once failed with storescu's exit code 167 (0xA7: a store answered A700 "at capacity"): recycling freed
    room without claiming it, other stores took it, and the third attempt gave up. Room is now claimed in the
    transaction that makes it, so no store is refused while older studies exist, however the workers interleave.
    """
    storescu = require_tool("/usr/bin/storescu", "dcmtk")
    capacity, associations, studies_each, per_study = 4_000_000, 4, 7, 3
    folders = []
    for association in range(associations):
        folder = tmp_path / f"sent-{association}"
        folder.mkdir()
        for study in range(association * 100, association * 100 + studies_each):
            for number in range(per_study):
                ds = _instance(study, number)
                ds.save_as(folder / f"{study}-{number}.dcm", enforce_file_format=True)
        folders.append(sorted(folder.iterdir()))
    archive = start_archive(
        tmp_path / "archive",
        "--capacity",
        str(capacity),
        "--at-capacity",
        "recycle",
        "--workers",
        "2",
        "--metrics-port",
        "0",
    )
    try:
        senders = [
            subprocess.Popen(
                [storescu, "-aec", archive.ae_title, "127.0.0.1", str(archive.port), *files],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for files in folders
        ]
        outcomes = [(sender.wait(120), sender.stderr.read()) for sender in senders]
        assert [code for code, _ in outcomes] == [0] * associations, (outcomes, archive.log.read_text()[-3000:])
        status = _status(archive)
        metrics = _metrics(archive)
    finally:
        archive.stop()

    indexed = _indexed(archive)
    instance_size = next(iter(indexed.values()))[1]
    stored = associations * studies_each * per_study
    assert metrics[("pacsbench_archive_operations_total", (("operation", "C-STORE"), ("status", "success")))] == stored
    assert not [k for k in metrics if k[0] == "pacsbench_archive_operations_total" and ("status", "failure") in k[1]]
    assert _files_on_tier(archive) == {path: size for path, size in indexed.values()}  # rows and files agree
    figures = status["capacity"]
    assert figures["used_bytes"] == len(indexed) * instance_size <= capacity
    assert figures["recycled_instances"] == stored - len(indexed) > 0
    assert figures["recycled_bytes"] == figures["recycled_instances"] * instance_size
    with sqlite3.connect(archive.index) as db:
        assert db.execute("SELECT COUNT(*) FROM study").fetchone()[0] == status["index"]["studies"]
        assert db.execute("SELECT SUM(num_instances) FROM study").fetchone()[0] == len(indexed)
        assert db.execute("SELECT SUM(num_instances) FROM patient").fetchone()[0] == len(indexed)


class ArchiveAddress(NamedTuple):
    """Where a running archive answers: what a store process needs of it (a RunningArchive does not pickle)."""

    port: int
    ae_title: str


def _store_studies(archive, studies: range, per_study: int) -> list[int]:
    """One association storing `per_study` instances of each study in turn; the statuses.

    `archive` needs only `port` and `ae_title`: a process of its own gets an ArchiveAddress."""
    peer = Peer(archive)
    try:
        return [peer.store(_instance(study, number)) for study in studies for number in range(per_study)]
    finally:
        peer.release()


def test_eight_concurrent_associations_at_capacity_are_never_refused_while_older_studies_exist(tmp_path):
    """8 associations over 2 worker processes into a full archive, each its own studies, 6 times the capacity.

    Every store must find room: recycling makes it and claims it in one transaction, so no
    other store (thread or worker process) can take it. The index never holds more than the capacity.
    """
    capacity, associations, studies_each, per_study = 3_000_000, 8, 5, 3
    archive = start_archive(
        tmp_path / "archive",
        "--capacity",
        str(capacity),
        "--at-capacity",
        "recycle",
        "--workers",
        "2",
        "--max-associations",
        "16",
        "--metrics-port",
        "0",
    )
    try:
        _store_studies(archive, range(900, 900 + 7), per_study)  # 21 instances: at capacity before the race starts
        watch = UsageWatch(archive)
        # One process per association: pynetdicom driven from real threads can lose a C-STORE response
        # to another association's reactor (pynetdicom issues 435 and 842), which would look like a refusal.
        address = ArchiveAddress(archive.port, archive.ae_title)
        work = [(address, range(a * 100, a * 100 + studies_each), per_study) for a in range(associations)]
        with multiprocessing.get_context("fork").Pool(associations) as pool:
            statuses = pool.starmap(_store_studies, work)
        largest_used, largest_committed = watch.finish()
        status = _status(archive)
    finally:
        archive.stop()

    assert statuses == [[0] * studies_each * per_study] * associations, archive.log.read_text()[-3000:]
    indexed = _indexed(archive)
    instance_size = next(iter(indexed.values()))[1]
    assert largest_used <= largest_committed <= capacity
    assert _files_on_tier(archive) == {path: size for path, size in indexed.values()}  # rows and files agree
    assert sum(size for _, size in indexed.values()) == status["capacity"]["used_bytes"] <= capacity
    assert capacity // instance_size - len(indexed) < per_study  # recycling frees what is missing, a study at a time
    stored = (7 + associations * studies_each) * per_study
    assert status["capacity"]["recycled_instances"] == stored - len(indexed)
    with sqlite3.connect(archive.index) as db:
        assert db.execute("SELECT COUNT(*) FROM claim").fetchone()[0] == 0  # every claim consumed or given back


def test_capacity_and_its_policy_come_from_the_config_file(tmp_path):
    from server_under_test.config import ConfigError, load_config

    config = tmp_path / "archive.toml"
    config.write_text('capacity = "4 GB"\nat_capacity = "recycle"\n')
    loaded = load_config(config)
    assert (loaded.capacity, loaded.at_capacity) == (4 * 10**9, "recycle")
    config.write_text('at_capacity = "stop"\n')
    with pytest.raises(ConfigError, match="at_capacity"):
        load_config(config)
