"""Sample rows: one per DICOM request, the only source reports compute from.

Latencies are kept exact (float milliseconds): locust rounds response times above a few
ms, so its own statistics are a summary, not the record.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SAMPLES_FILE = "samples.csv"


@dataclass
class Sample:
    start: float  # Unix time (s) the request was sent
    worker: str  # host-pid of the load process
    user: str  # locust user id, unique in the run (w<N>- prefix in worker processes)
    user_type: str  # modality, workstation, query, echo: the role that user plays
    association: str  # association id (changes when a user re-associates)
    operation: str  # C-ECHO, C-STORE, ... or ASSOCIATE for a failed association
    sop_instance_uid: str
    study_instance_uid: str
    instances: int  # instances this request carried (1 for a C-STORE)
    frames: int
    bytes: int
    latency_ms: float
    status: int  # DICOM status (0 = success), -1 when no response came back
    error: str  # empty on success


COLUMNS = [f.name for f in fields(Sample)]


class CsvRows:
    """Appends dict rows to a CSV file; flushed every `flush_every` rows and on close."""

    def __init__(self, path: Path, columns: list[str], flush_every: int = 50):
        self.path = path
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()
        self._pending = 0
        self.flush_every = flush_every
        self.rows = 0

    def write_row(self, row: dict) -> None:
        self._writer.writerow(row)
        self.rows += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self._file.flush()
            self._pending = 0

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def sample_row(sample: Sample) -> dict:
    row = asdict(sample)
    row["start"] = f"{sample.start:.6f}"
    row["latency_ms"] = f"{sample.latency_ms:.3f}"
    return row


class SampleWriter(CsvRows):
    """samples.csv."""

    def __init__(self, path: Path, flush_every: int = 50):
        super().__init__(path, COLUMNS, flush_every)

    def write(self, sample: Sample) -> None:
        self.write_row(sample_row(sample))


# What the archive acknowledged (sent.csv) and, when workstations hash, what came back
# (retrieved.csv): `pacsbench verify` compares the archive's copies against the first, and
# the second against the first.
SENT_FILE = "sent.csv"
SENT_COLUMNS = ["sop_instance_uid", "study_instance_uid", "sop_class_uid", "transfer_syntax_uid", "bytes", "digest",
                "source"]
RETRIEVED_FILE = "retrieved.csv"
RETRIEVED_COLUMNS = ["sop_instance_uid", "study_instance_uid", "bytes", "digest", "operation", "user"]


def sent_row(instance, source: str) -> dict:
    """The sent.csv row of a bench.studies.pool.PooledInstance the archive acknowledged."""
    return {
        "sop_instance_uid": instance.sop_instance_uid,
        "study_instance_uid": instance.changes["StudyInstanceUID"],
        "sop_class_uid": instance.sop_class_uid,
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "bytes": instance.size,
        "digest": instance.digest(),
        "source": source,
    }


# One row per C-MOVE or C-GET: the archive's sub-operation counts next to what arrived.
SUBOPERATIONS_FILE = "suboperations.csv"
SUBOPERATIONS_COLUMNS = ["operation", "user", "study_instance_uid", "status", "completed", "failed", "warning",
                         "arrived", "arrived_bytes"]
RECORD_FILES = {SAMPLES_FILE: COLUMNS, SENT_FILE: SENT_COLUMNS, RETRIEVED_FILE: RETRIEVED_COLUMNS,
                SUBOPERATIONS_FILE: SUBOPERATIONS_COLUMNS}


class RunRecords:
    """The row files of one run folder; each opened on its first row (samples.csv always)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._files: dict[str, CsvRows] = {SAMPLES_FILE: CsvRows(run_dir / SAMPLES_FILE, COLUMNS)}

    def sample(self, sample: Sample) -> None:
        self.add(SAMPLES_FILE, sample_row(sample))

    def add(self, name: str, row: dict) -> None:
        if name not in self._files:
            self._files[name] = CsvRows(self.run_dir / name, RECORD_FILES[name])
        self._files[name].write_row(row)

    def add_batch(self, batch: dict[str, list[dict]]) -> None:
        for name, rows in batch.items():
            for row in rows:
                self.add(name, row)

    @property
    def samples(self) -> int:
        return self._files[SAMPLES_FILE].rows

    def close(self) -> None:
        for rows in self._files.values():
            rows.close()


class RelayedRecords:
    """The same interface in a worker process: rows wait in memory until shipped to the master."""

    def __init__(self):
        self._batch: dict[str, list[dict]] = {}
        self.samples = 0

    def sample(self, sample: Sample) -> None:
        self.samples += 1
        self.add(SAMPLES_FILE, sample_row(sample))

    def add(self, name: str, row: dict) -> None:
        self._batch.setdefault(name, []).append(row)

    def drain(self) -> dict[str, list[dict]]:
        batch, self._batch = self._batch, {}
        return batch
