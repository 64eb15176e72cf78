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
    user: str  # locust user id within the worker
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


class SampleWriter:
    """Appends rows to samples.csv; flushed every `flush_every` rows and on close."""

    def __init__(self, path: Path, flush_every: int = 50):
        self.path = path
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._pending = 0
        self.flush_every = flush_every
        self.rows = 0

    def write(self, sample: Sample) -> None:
        row = asdict(sample)
        row["start"] = f"{sample.start:.6f}"
        row["latency_ms"] = f"{sample.latency_ms:.3f}"
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
