"""The SQLite index: patients, studies, series, instances, tier usage, recycled totals.

WAL mode: readers (C-FIND, retrieves) never block the writer. Writes are group-committed:
concurrent stores in one process share one transaction and one fsync of the WAL, and each
caller returns only after its row is committed (synchronous=FULL makes the commit durable).
No committer thread: the first caller to find no commit running commits everything queued
(a thread hand-off per store costs more than the commit itself when a batch holds one row).
Worker processes take turns on the write transaction through a file lock (flock) rather than
SQLite's busy handler, which sleeps 1, 2, 5, 10 ms between tries: a worker waiting for the other's
commit starts its own the moment it ends (measured: 9% of a CT store was spent in those waits),
and fsyncs its group's folders before it takes its turn, while the other commits.
Study and series rows carry their counts (NumberOf...Related...) so queries on a large
index never count rows.

With a capacity, the group commit is also where the archive's bound holds: a row that would
take the bytes stored plus the room others have claimed past it is rolled back (AtCapacity),
inside the same transaction that reads the usage, so concurrent workers can never overshoot it
together. A claim (a `claim` row) is room that recycling made for one store, in the transaction
that deleted the studies; the store's row consumes it when it commits, and no other store can
take it meanwhile, in this worker process or another.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from server_under_test.storage.files import fsync_path

INDEX_FILE = "index.sqlite"  # in the archive's data folder
COMMIT_TURN_SUFFIX = ".commit-turn"  # beside the index: the lock file the group commits take turns on
CLAIM_SECONDS = 600.0  # a claim outlives any store that made it (a crashed worker's claim lapses)

SCHEMA = """
CREATE TABLE IF NOT EXISTS patient (
    patient_key   INTEGER PRIMARY KEY,
    patient_id    TEXT NOT NULL UNIQUE,
    patient_name  TEXT NOT NULL DEFAULT '',
    birth_date    TEXT NOT NULL DEFAULT '',
    sex           TEXT NOT NULL DEFAULT '',
    num_studies   INTEGER NOT NULL DEFAULT 0,
    num_series    INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS study (
    study_key     INTEGER PRIMARY KEY,
    study_uid     TEXT NOT NULL UNIQUE,
    patient_key   INTEGER NOT NULL REFERENCES patient(patient_key),
    study_date    TEXT NOT NULL DEFAULT '',
    study_time    TEXT NOT NULL DEFAULT '',
    accession     TEXT NOT NULL DEFAULT '',
    study_id      TEXT NOT NULL DEFAULT '',
    description   TEXT NOT NULL DEFAULT '',
    referring     TEXT NOT NULL DEFAULT '',
    modalities    TEXT NOT NULL DEFAULT '',
    num_series    INTEGER NOT NULL DEFAULT 0,
    num_instances INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    series_key    INTEGER PRIMARY KEY,
    series_uid    TEXT NOT NULL UNIQUE,
    study_key     INTEGER NOT NULL REFERENCES study(study_key),
    modality      TEXT NOT NULL DEFAULT '',
    series_number TEXT NOT NULL DEFAULT '',
    body_part     TEXT NOT NULL DEFAULT '',
    description   TEXT NOT NULL DEFAULT '',
    num_instances INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS instance (
    instance_key    INTEGER PRIMARY KEY,
    sop_uid         TEXT NOT NULL UNIQUE,
    series_key      INTEGER NOT NULL REFERENCES series(series_key),
    sop_class_uid   TEXT NOT NULL,
    instance_number TEXT NOT NULL DEFAULT '',
    transfer_syntax TEXT NOT NULL,
    frames          INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    tier            INTEGER NOT NULL,
    path            TEXT NOT NULL,
    stored_at       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tier_usage (
    tier  INTEGER PRIMARY KEY,
    bytes INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recycled (
    only      INTEGER PRIMARY KEY CHECK (only = 0),
    studies   INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS claim (
    claim_key  INTEGER PRIMARY KEY,
    bytes      INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS patient_name ON patient(patient_name);
CREATE INDEX IF NOT EXISTS study_patient ON study(patient_key);
CREATE INDEX IF NOT EXISTS study_date ON study(study_date, study_time);
CREATE INDEX IF NOT EXISTS study_accession ON study(accession);
CREATE INDEX IF NOT EXISTS study_updated ON study(updated_at);
CREATE INDEX IF NOT EXISTS series_study ON series(study_key);
CREATE INDEX IF NOT EXISTS instance_series ON instance(series_key);
CREATE INDEX IF NOT EXISTS instance_tier_series ON instance(tier, series_key);
"""


class AtCapacity(Exception):
    """Committing this instance would take the archive past its capacity."""


@dataclass(frozen=True)
class InstanceRecord:
    """Everything the index keeps about one stored instance."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    study_description: str
    referring: str
    series_uid: str
    modality: str
    series_number: str
    body_part: str
    series_description: str
    sop_uid: str
    sop_class_uid: str
    instance_number: str
    transfer_syntax: str
    frames: int
    size: int
    tier: int
    path: str


@dataclass(frozen=True)
class StoredInstance:
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    tier: int


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=60000")
    return db


def index_path(data: Path) -> Path:
    """The index of the archive whose data folder is `data`."""
    return data / INDEX_FILE


def create_schema(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = connect(path)
    db.executescript(SCHEMA)
    db.close()


# A row that already holds what a store would write is not written again: most stores add an instance to a
# patient, study and series already indexed, and every page an update touches is one more page (4 KB) in the
# WAL and in the checkpoint, per instance. The study's updated_at (what recycling and migration order by)
# moves on only once a second for the same reason: those act on studies quiet for seconds or more.
UPDATED_AT_STEP = 1.0


def _upsert_patient(db, r: InstanceRecord) -> int:
    row = db.execute(
        "SELECT patient_key, patient_name, birth_date, sex FROM patient WHERE patient_id=?", (r.patient_id,)
    ).fetchone()
    if row is None:
        return db.execute(
            "INSERT INTO patient(patient_id, patient_name, birth_date, sex) VALUES (?,?,?,?)",
            (r.patient_id, r.patient_name, r.birth_date, r.sex),
        ).lastrowid
    if row[1:] != (r.patient_name, r.birth_date, r.sex):
        db.execute(
            "UPDATE patient SET patient_name=?, birth_date=?, sex=? WHERE patient_key=?",
            (r.patient_name, r.birth_date, r.sex, row[0]),
        )
    return row[0]


def _upsert_study(db, r: InstanceRecord, patient_key: int) -> tuple[int, int]:
    """The study's key and its patient's (a study stays with the patient it was first stored under)."""
    attributes = (r.study_date, r.study_time, r.accession, r.study_id, r.study_description, r.referring)
    row = db.execute(
        "SELECT study_key, patient_key, study_date, study_time, accession, study_id, description, referring, "
        "updated_at FROM study WHERE study_uid=?",
        (r.study_uid,),
    ).fetchone()
    now = time.time()
    if row:
        if row[2:8] != attributes or now - row[8] >= UPDATED_AT_STEP:
            db.execute(
                "UPDATE study SET study_date=?, study_time=?, accession=?, study_id=?, description=?, referring=?, "
                "updated_at=? WHERE study_key=?",
                (*attributes, now, row[0]),
            )
        return row[0], row[1]
    cursor = db.execute(
        "INSERT INTO study(study_uid, patient_key, study_date, study_time, accession, study_id, description, "
        "referring, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (r.study_uid, patient_key, *attributes, now),
    )
    db.execute("UPDATE patient SET num_studies = num_studies + 1 WHERE patient_key=?", (patient_key,))
    return cursor.lastrowid, patient_key


def _upsert_series(db, r: InstanceRecord, study_key: int, patient_key: int) -> int:
    attributes = (r.modality, r.series_number, r.body_part, r.series_description)
    row = db.execute(
        "SELECT series_key, modality, series_number, body_part, description FROM series WHERE series_uid=?",
        (r.series_uid,),
    ).fetchone()
    if row:
        if row[1:] != attributes:
            db.execute(
                "UPDATE series SET modality=?, series_number=?, body_part=?, description=? WHERE series_key=?",
                (*attributes, row[0]),
            )
        return row[0]
    cursor = db.execute(
        "INSERT INTO series(series_uid, study_key, modality, series_number, body_part, description) "
        "VALUES (?,?,?,?,?,?)",
        (r.series_uid, study_key, *attributes),
    )
    modalities = db.execute("SELECT modalities FROM study WHERE study_key=?", (study_key,)).fetchone()[0]
    merged = "\\".join(sorted(set(filter(None, modalities.split("\\"))) | {r.modality} - {""}))
    db.execute("UPDATE study SET num_series = num_series + 1, modalities=? WHERE study_key=?", (merged, study_key))
    db.execute("UPDATE patient SET num_series = num_series + 1 WHERE patient_key=?", (patient_key,))
    return cursor.lastrowid


def _count_instance(db, series_key: int, delta: int, study_key: int | None = None, patient_key: int = 0) -> None:
    """Add `delta` instances to the series, its study and its patient (looked up unless given)."""
    if study_key is None:
        study_key = db.execute("SELECT study_key FROM series WHERE series_key=?", (series_key,)).fetchone()[0]
        patient_key = db.execute("SELECT patient_key FROM study WHERE study_key=?", (study_key,)).fetchone()[0]
    db.execute("UPDATE series SET num_instances = num_instances + ? WHERE series_key=?", (delta, series_key))
    db.execute("UPDATE study SET num_instances = num_instances + ? WHERE study_key=?", (delta, study_key))
    db.execute("UPDATE patient SET num_instances = num_instances + ? WHERE patient_key=?", (delta, patient_key))


def _use_tier(db, tier: int, delta_bytes: int, delta_files: int) -> None:
    db.execute(
        "INSERT INTO tier_usage(tier, bytes, files) VALUES (?,?,?) "
        "ON CONFLICT(tier) DO UPDATE SET bytes = bytes + excluded.bytes, files = files + excluded.files",
        (tier, delta_bytes, delta_files),
    )


def apply_record(db, r: InstanceRecord) -> str | None:
    """Insert or replace one instance; return the path of a replaced file (to delete), if any."""
    study_key, patient_key = _upsert_study(db, r, _upsert_patient(db, r))
    series_key = _upsert_series(db, r, study_key, patient_key)
    old = remove_instance(db, r.sop_uid)
    db.execute(
        "INSERT INTO instance(sop_uid, series_key, sop_class_uid, instance_number, transfer_syntax, frames, size, "
        "tier, path, stored_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            r.sop_uid,
            series_key,
            r.sop_class_uid,
            r.instance_number,
            r.transfer_syntax,
            r.frames,
            r.size,
            r.tier,
            r.path,
            time.time(),
        ),
    )
    _count_instance(db, series_key, +1, study_key, patient_key)
    _use_tier(db, r.tier, r.size, 1)
    return old[0] if old and old[0] != r.path else None


def remove_instance(db, sop_uid: str) -> tuple[str, int] | None:
    """Delete one instance's row and take it off every count; its file as (path, size), or None."""
    old = db.execute(
        "SELECT instance_key, series_key, size, tier, path FROM instance WHERE sop_uid=?", (sop_uid,)
    ).fetchone()
    if old is None:
        return None
    db.execute("DELETE FROM instance WHERE instance_key=?", (old[0],))
    _count_instance(db, old[1], -1)
    _use_tier(db, old[3], -old[2], -1)
    return old[4], old[2]


def used_bytes(db) -> int:
    """Bytes stored on all tiers together (what the archive's capacity bounds)."""
    return db.execute("SELECT COALESCE(SUM(bytes), 0) FROM tier_usage").fetchone()[0]


def claimed_bytes(db) -> int:
    """Room claimed for stores not yet committed (lapsed claims not counted)."""
    return db.execute("SELECT COALESCE(SUM(bytes), 0) FROM claim WHERE expires_at > ?", (time.time(),)).fetchone()[0]


def add_claim(db, size: int) -> int:
    """Claim `size` bytes of room for one store (inside the caller's transaction); the claim's key, never 0."""
    db.execute("DELETE FROM claim WHERE expires_at <= ?", (time.time(),))
    return db.execute(
        "INSERT INTO claim(bytes, expires_at) VALUES (?, ?)", (size, time.time() + CLAIM_SECONDS)
    ).lastrowid


def drop_claim(db, claim: int) -> None:
    db.execute("DELETE FROM claim WHERE claim_key=?", (claim,))


def drop_all_claims(path: Path) -> None:
    """Forget every claim: at start-up no store is in flight, so a claim left by a crash holds nothing."""
    db = connect(path)
    try:
        db.execute("DELETE FROM claim")
    finally:
        db.close()


def remove_study(db, study_key: int) -> list[tuple[str, int]]:
    """Delete a study's rows and take them off every count; return its files as (path, size).

    Run inside the caller's transaction: the files are the caller's to delete once it commits.
    """
    files = db.execute(
        "SELECT i.path, i.size, i.tier FROM instance i JOIN series r ON r.series_key = i.series_key "
        "WHERE r.study_key = ?",
        (study_key,),
    ).fetchall()
    for tier in {tier for _, _, tier in files}:
        on_tier = [size for _, size, t in files if t == tier]
        _use_tier(db, tier, -sum(on_tier), -len(on_tier))
    series_count = db.execute("SELECT COUNT(*) FROM series WHERE study_key=?", (study_key,)).fetchone()[0]
    patient_key = db.execute("SELECT patient_key FROM study WHERE study_key=?", (study_key,)).fetchone()[0]
    db.execute(
        "DELETE FROM instance WHERE series_key IN (SELECT series_key FROM series WHERE study_key=?)", (study_key,)
    )
    db.execute("DELETE FROM series WHERE study_key=?", (study_key,))
    db.execute("DELETE FROM study WHERE study_key=?", (study_key,))
    db.execute(
        "UPDATE patient SET num_studies = num_studies - 1, num_series = num_series - ?, "
        "num_instances = num_instances - ? WHERE patient_key=?",
        (series_count, len(files), patient_key),
    )
    db.execute("DELETE FROM patient WHERE patient_key=? AND num_studies <= 0", (patient_key,))
    return [(path, size) for path, size, _ in files]


def count_recycled(db, studies: int, instances: int, size: int) -> None:
    db.execute("INSERT INTO recycled(only) VALUES (0) ON CONFLICT(only) DO NOTHING")
    db.execute(
        "UPDATE recycled SET studies = studies + ?, instances = instances + ?, bytes = bytes + ?",
        (studies, instances, size),
    )


def recycled_totals(db) -> dict[str, int]:
    """Studies, instances and bytes recycled to make room, over the index's life."""
    row = db.execute("SELECT studies, instances, bytes FROM recycled").fetchone() or (0, 0, 0)
    return dict(zip(("studies", "instances", "bytes"), row))


class _Pending:
    __slots__ = ("record", "sync_dirs", "claim", "finished", "result", "error")

    def __init__(self, record: InstanceRecord, sync_dirs: tuple, claim: int):
        self.record = record
        self.sync_dirs = sync_dirs
        self.claim = claim
        self.finished = False
        self.result = None
        self.error: BaseException | None = None


class Index:
    """One process's handle on the index: a group-committing writer plus per-thread readers."""

    def __init__(self, path: Path, synchronous: str = "FULL", capacity: int = 0):
        self.path = path
        self.synchronous = synchronous
        self.capacity = capacity  # bytes on all tiers together; 0 = unlimited
        self._writer = connect(path, synchronous)
        # Worker processes take turns on SQLite's write lock through this file lock: a blocked flock wakes the moment
        # the lock is free, where SQLite's busy handler sleeps 1, 2, 5, 10 ms... between tries.
        self._turn = os.open(path.with_name(path.name + COMMIT_TURN_SUFFIX), os.O_RDWR | os.O_CREAT, 0o600)
        self._queue: list[_Pending] = []
        self._cv = threading.Condition()
        self._committing = False
        self._closed = False
        self._local = threading.local()
        self.commits = 0

    # -- writes ------------------------------------------------------------------------
    def add(self, record: InstanceRecord, sync_dirs: tuple = (), timeout: float = 120.0, claim: int = 0) -> str | None:
        """Commit one instance row (durably); return the path of a file it replaced, if any.

        `sync_dirs` are folders whose new entries must be durable before the row is: each
        is fsynced once per batch, so concurrent stores into one study share it. `claim`
        (from add_claim) is room made for this row: the row consumes it as it commits.
        """
        pending = _Pending(record, sync_dirs, claim)
        deadline = time.monotonic() + timeout
        with self._cv:
            if self._closed:
                raise RuntimeError("index is closed")
            self._queue.append(pending)
            while not pending.finished:
                if self._committing:  # another caller is committing: it or the next leader takes ours
                    if not self._cv.wait(max(0.0, deadline - time.monotonic())) and pending in self._queue:
                        self._queue.remove(pending)  # never committed, so the caller may treat it as failed
                        raise TimeoutError("index commit did not start in time")
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._commit(batch)
                finally:
                    self._cv.acquire()
                    self._committing = False
                    self._cv.notify_all()
        if pending.error:
            raise pending.error
        return pending.result

    def _commit(self, batch: list[_Pending]) -> None:
        db = self._writer
        settled = False  # every item has its result or its error
        try:
            for folder in {d for item in batch for d in item.sync_dirs}:  # while another process may commit
                fsync_path(folder)
            fcntl.flock(self._turn, fcntl.LOCK_EX)
            db.execute("BEGIN IMMEDIATE")
            for item in batch:
                db.execute("SAVEPOINT one")
                try:
                    item.result = apply_record(db, item.record)
                    if item.claim:
                        drop_claim(db, item.claim)
                    if self.capacity and used_bytes(db) + claimed_bytes(db) > self.capacity:
                        raise AtCapacity(f"storing {item.record.sop_uid} would pass the capacity")
                    db.execute("RELEASE one")
                except Exception as exc:  # a bad row fails alone, the batch goes on
                    db.execute("ROLLBACK TO one")
                    db.execute("RELEASE one")
                    item.error = exc
            db.execute("COMMIT")
            self.commits += 1
            settled = True
        except Exception as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for item in batch:
                item.error = item.error or exc
            settled = True
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)
            for item in batch:
                if not settled:
                    item.error = item.error or RuntimeError("the index commit was interrupted")
                item.finished = True

    # -- reads -------------------------------------------------------------------------
    @property
    def reader(self) -> sqlite3.Connection:
        """A read connection for the calling thread (SQLite connections are not shared)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path, self.synchronous)
            db.execute("PRAGMA query_only=ON")
            self._local.db = db
        return db

    def exists(self, sop_uid: str) -> bool:
        return self.reader.execute("SELECT 1 FROM instance WHERE sop_uid=?", (sop_uid,)).fetchone() is not None

    def locate(self, sop_uid: str) -> StoredInstance | None:
        row = self.reader.execute(
            "SELECT sop_uid, sop_class_uid, transfer_syntax, path, size, tier FROM instance WHERE sop_uid=?", (sop_uid,)
        ).fetchone()
        return StoredInstance(*row) if row else None

    def count_instances(self) -> int:
        return self.reader.execute("SELECT COUNT(*) FROM instance").fetchone()[0]

    def used_bytes(self) -> int:
        return used_bytes(self.reader)

    def free_bytes(self) -> int:
        """Room under the capacity that no store has claimed (only meaningful with a capacity)."""
        return self.capacity - used_bytes(self.reader) - claimed_bytes(self.reader)

    def tier_usage(self) -> dict[int, tuple[int, int]]:
        return {t: (b, f) for t, b, f in self.reader.execute("SELECT tier, bytes, files FROM tier_usage")}

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.wait_for(lambda: not self._committing and not self._queue, timeout=30)
        self._writer.close()
        os.close(self._turn)
