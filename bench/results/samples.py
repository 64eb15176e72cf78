"""Sample rows: one per DICOM request, the only source reports compute from.

Latencies are kept exact (float milliseconds): locust rounds response times above a few
ms, so its own statistics are a summary, not the record.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from server_under_test.upper_layer.status import is_done

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


def done_mask(status):
    """Which rows of a samples status column (a pandas Series) succeeded, warnings included:
    the archive's vocabulary (server_under_test.upper_layer.status) decides, as it does for the
    users that wrote the rows."""
    return status.isin([code for code in status.unique() if is_done(int(code))])


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


class Records:
    """The rows of one run, from locust's request events: `on_request` is the one listener.

    A DICOM user fires `events.request` once per request with the sample's other fields in
    `context`; the latency is `response_time` itself (exact milliseconds as fired: locust
    rounds only in its own statistics). A C-STORE's context carries the instance (a
    bench.studies.pool.PooledInstance), a C-MOVE or C-GET's the bench.dicom.scu.RetrieveOutcome,
    which become sent.csv, suboperations.csv and retrieved.csv rows.
    """

    def on_request(self, name: str, response_time: float, response_length: int, exception, context: dict, **_) -> None:
        error = str(exception) if exception else ""
        self.add(SAMPLES_FILE, sample_row(request_sample(name, response_time, response_length, error, context)))
        if context.get("instance") is not None and not error:
            self.add(SENT_FILE, sent_row(context["instance"], "load"))
        if context.get("retrieval") is not None:
            self._retrieval_rows(name, context["user"], context["study_instance_uid"], context["retrieval"])

    def _retrieval_rows(self, operation: str, user: str, study: str, outcome) -> None:
        self.add(SUBOPERATIONS_FILE, {
            "operation": operation, "user": user, "study_instance_uid": study, "status": outcome.status,
            "completed": outcome.completed, "failed": outcome.failed, "warning": outcome.warning,
            "arrived": len(outcome.arrivals), "arrived_bytes": outcome.bytes,
        })
        for arrival in outcome.arrivals:
            if arrival.digest:  # hashed only when the workstation checks digests
                self.add(RETRIEVED_FILE, {
                    "sop_instance_uid": arrival.sop_instance_uid, "study_instance_uid": arrival.study_instance_uid,
                    "bytes": arrival.bytes, "digest": arrival.digest, "operation": operation, "user": user,
                })

    def add(self, name: str, row: dict) -> None:
        raise NotImplementedError


def request_sample(operation: str, latency_ms: float, size: int, error: str, context: dict) -> Sample:
    """The sample of one request event."""
    return Sample(
        start=context["start"],
        worker=context["worker"],
        user=context["user"],
        user_type=context["user_type"],
        association=context["association"],
        operation=operation,
        sop_instance_uid=context.get("sop_instance_uid", ""),
        study_instance_uid=context.get("study_instance_uid", ""),
        instances=context.get("instances", 0),
        frames=context.get("frames", 0),
        bytes=size,
        latency_ms=latency_ms,
        status=context["status"],
        error=error,
    )


class RunRecords(Records):
    """The row files of one run folder; each opened on its first row (samples.csv always)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._files: dict[str, CsvRows] = {SAMPLES_FILE: CsvRows(run_dir / SAMPLES_FILE, COLUMNS)}

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


class RelayedRecords(Records):
    """The same rows in a worker process: they wait in memory until shipped to the master."""

    def __init__(self):
        self._batch: dict[str, list[dict]] = {}

    def add(self, name: str, row: dict) -> None:
        self._batch.setdefault(name, []).append(row)

    def drain(self) -> dict[str, list[dict]]:
        batch, self._batch = self._batch, {}
        return batch
