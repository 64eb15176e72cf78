"""The SQLite index: patient, study, series and instance rows, one transaction per instance.

WAL mode with synchronous=FULL: a committed row survives power loss, and readers never
block the writer. One connection guarded by a lock keeps writes serialized across the
association threads (SQLite allows one writer at a time anyway).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS patient (
    patient_id   TEXT PRIMARY KEY,
    patient_name TEXT,
    birth_date   TEXT,
    sex          TEXT
);
CREATE TABLE IF NOT EXISTS study (
    study_uid    TEXT PRIMARY KEY,
    patient_id   TEXT NOT NULL REFERENCES patient(patient_id),
    study_date   TEXT,
    study_time   TEXT,
    accession    TEXT,
    study_id     TEXT,
    description  TEXT
);
CREATE TABLE IF NOT EXISTS series (
    series_uid    TEXT PRIMARY KEY,
    study_uid     TEXT NOT NULL REFERENCES study(study_uid),
    modality      TEXT,
    series_number INTEGER,
    body_part     TEXT
);
CREATE TABLE IF NOT EXISTS instance (
    sop_uid         TEXT PRIMARY KEY,
    series_uid      TEXT NOT NULL REFERENCES series(series_uid),
    sop_class_uid   TEXT NOT NULL,
    instance_number INTEGER,
    transfer_syntax TEXT NOT NULL,
    frames          INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    path            TEXT NOT NULL,
    stored_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS study_patient ON study(patient_id);
CREATE INDEX IF NOT EXISTS study_date ON study(study_date);
CREATE INDEX IF NOT EXISTS study_accession ON study(accession);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instance_series ON instance(series_uid);
"""


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
    series_uid: str
    modality: str
    series_number: int | None
    body_part: str
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax: str
    frames: int
    size: int
    path: str


class Index:
    def __init__(self, path: Path, synchronous: str = "FULL"):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def add(self, r: InstanceRecord) -> None:
        """Insert or update the patient/study/series rows and the instance, atomically."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO patient VALUES (?,?,?,?) ON CONFLICT(patient_id) DO UPDATE SET "
                    "patient_name=excluded.patient_name, birth_date=excluded.birth_date, sex=excluded.sex",
                    (r.patient_id, r.patient_name, r.birth_date, r.sex),
                )
                db.execute(
                    "INSERT INTO study VALUES (?,?,?,?,?,?,?) ON CONFLICT(study_uid) DO UPDATE SET "
                    "study_date=excluded.study_date, study_time=excluded.study_time, "
                    "accession=excluded.accession, study_id=excluded.study_id, description=excluded.description",
                    (r.study_uid, r.patient_id, r.study_date, r.study_time, r.accession, r.study_id, r.study_description),
                )
                db.execute(
                    "INSERT INTO series VALUES (?,?,?,?,?) ON CONFLICT(series_uid) DO UPDATE SET "
                    "modality=excluded.modality, series_number=excluded.series_number, body_part=excluded.body_part",
                    (r.series_uid, r.study_uid, r.modality, r.series_number, r.body_part),
                )
                db.execute(
                    "INSERT OR REPLACE INTO instance VALUES (?,?,?,?,?,?,?,?,?)",
                    (r.sop_uid, r.series_uid, r.sop_class_uid, r.instance_number, r.transfer_syntax,
                     r.frames, r.size, r.path, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def count_instances(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM instance").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
