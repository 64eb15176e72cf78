"""Sample rows: one per DICOM request, the only source reports compute from.

Latencies are kept exact (float milliseconds): locust rounds response times above a few
ms, so its own statistics are a summary, not the record.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Required, TypedDict

from server_under_test.upper_layer.status import is_done

if TYPE_CHECKING:
    import pandas as pd

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
    status: int  # DICOM status (0 = success); HTTP status for a DICOMweb request; -1 when no response came back
    error: str  # empty on success
    modality: str = ""  # the study's modalities (Modalities in Study: 'CT', 'CT\\PT'); empty when unknown


COLUMNS = [f.name for f in fields(Sample)]

# The DICOMweb requests (PS3.18): their status column holds the HTTP status, not a DIMSE one. WADO-RS retrieves
# instances (multipart application/dicom); a viewer's WADO-RS asks for a study's metadata (DICOM JSON) and for
# frames (multipart application/octet-stream): their own operations, since their sizes and latencies are another
# request's.
STOW_RS, QIDO_RS, WADO_RS = "STOW-RS", "QIDO-RS", "WADO-RS"
WADO_RS_FRAMES, WADO_RS_METADATA = "WADO-RS frames", "WADO-RS metadata"
HTTP_OPERATIONS = (STOW_RS, QIDO_RS, WADO_RS, WADO_RS_FRAMES, WADO_RS_METADATA)

# One row of a row file (samples.csv, sent.csv, ...): column name to value, as csv.DictWriter takes it.
Row = dict[str, object]


class RequestContext(TypedDict, total=False):
    """The `context` of a DICOM user's request event (bench.load.users fires it): the sample's fields
    beyond locust's own, and the plain rows of the side files (bench.load.rows)."""

    start: Required[float]
    worker: Required[str]
    user: Required[str]
    user_type: Required[str]
    association: Required[str]
    status: Required[int]
    sop_instance_uid: str
    study_instance_uid: str
    instances: int
    frames: int
    modality: str
    sent: Row
    sent_rows: list[Row]
    suboperations: Row
    retrieved: list[Row]


def http_done(status: int) -> bool:
    """A DICOMweb request succeeded: HTTP 2xx (a STOW-RS 202, stored in part, has its failures in the error column)."""
    return 200 <= status < 300


def done_mask(status: pd.Series, operation: pd.Series | None = None) -> pd.Series:
    """Which rows of a samples status column (a pandas Series) succeeded, warnings included:
    the archive's vocabulary (server_under_test.upper_layer.status) decides, as it does for the
    users that wrote the rows; with the `operation` column beside, DICOMweb rows by their HTTP status."""
    dimse = status.isin([code for code in status.unique() if is_done(int(code))])
    if operation is None:
        return dimse
    http = operation.isin(HTTP_OPERATIONS)
    return (dimse & ~http) | (http & status.isin([code for code in status.unique() if http_done(int(code))]))


class CsvRows:
    """Appends dict rows to a CSV file, whole rows only: buffered, written every `flush_every` rows and on close.

    The file must never end in half a row, even on a full disk: when a write fails (ENOSPC),
    the file is cut back to its last complete row, the error is kept in `error` and raised,
    and later rows are dropped. `rows` counts the rows in the file and in the buffer.
    """

    def __init__(self, path: Path, columns: list[str], flush_every: int = 50):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._buffer = io.StringIO(newline="")
        self._writer = csv.DictWriter(self._buffer, fieldnames=columns)
        self._writer.writeheader()
        self._pending = 0
        self._complete = 0  # bytes of the file that hold whole rows
        self.flush_every = flush_every
        self.rows = 0
        self.error: OSError | None = None

    def write_row(self, row: Row) -> None:
        if self.error is not None or self._fd < 0:
            return
        self._writer.writerow(row)
        self.rows += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows; on failure cut the file back to its last complete row and raise."""
        data = self._buffer.getvalue().encode("utf-8")
        if not data or self.error is not None:
            return
        self._buffer.seek(0)
        self._buffer.truncate()
        pending, self._pending = self._pending, 0
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.error = exc
            self.rows -= pending
            os.ftruncate(self._fd, self._complete)
            raise
        self._complete += len(data)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1


def unix_time(seconds: float) -> str:
    """A Unix time as the row files hold it: microseconds."""
    return f"{seconds:.6f}"


def sample_row(sample: Sample) -> Row:
    row = asdict(sample)
    row["start"] = unix_time(sample.start)
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
SENT_COLUMNS = [
    "sop_instance_uid",
    "study_instance_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "bytes",
    "digest",
    "source",
]
RETRIEVED_FILE = "retrieved.csv"
RETRIEVED_COLUMNS = ["sop_instance_uid", "study_instance_uid", "bytes", "digest", "operation", "user"]


# One row per C-MOVE or C-GET: the archive's sub-operation counts next to what arrived.
SUBOPERATIONS_FILE = "suboperations.csv"
SUBOPERATIONS_COLUMNS = [
    "operation",
    "user",
    "study_instance_uid",
    "status",
    "completed",
    "failed",
    "warning",
    "arrived",
    "arrived_bytes",
]
RECORD_FILES = {
    SAMPLES_FILE: COLUMNS,
    SENT_FILE: SENT_COLUMNS,
    RETRIEVED_FILE: RETRIEVED_COLUMNS,
    SUBOPERATIONS_FILE: SUBOPERATIONS_COLUMNS,
}
# The columns of each row file that hold a Unix time, read off the clock of the process that wrote the row.
TIME_COLUMNS = {SAMPLES_FILE: ("start",)}


def on_master_clock(batch: dict[str, list[Row]], offset: float) -> dict[str, list[Row]]:
    """A worker's batch of rows with every time column put on the master's clock.

    `offset` is the worker's clock less the master's (bench.load.clock). The master applies it
    once, as a batch arrives, before the rows reach a file.
    """
    shifted: dict[str, list[Row]] = {}
    for name, rows in batch.items():
        columns = TIME_COLUMNS.get(name, ())
        shifted[name] = [{**row, **{c: unix_time(float(str(row[c])) - offset) for c in columns}} for row in rows]
    return shifted


class Records:
    """The rows of one run, from locust's request events: `on_request` is the one listener.

    A DICOM user fires `events.request` once per request with the sample's other fields in
    `context`; the latency is `response_time` itself (exact milliseconds as fired: locust
    rounds only in its own statistics). The context carries the side files' rows as plain
    values (bench.load.rows makes them): an acknowledged C-STORE's `sent` row (a STOW-RS's
    `sent_rows`), a C-MOVE or C-GET's `suboperations` row and its (or a WADO-RS's) `retrieved` rows.
    """

    def on_request(
        self,
        name: str,
        response_time: float,
        response_length: int,
        exception: BaseException | None,
        context: RequestContext,
        **_: object,
    ) -> None:
        error = str(exception) if exception else ""
        self.add(SAMPLES_FILE, sample_row(request_sample(name, response_time, response_length, error, context)))
        if context.get("sent"):
            self.add(SENT_FILE, context["sent"])
        for row in context.get("sent_rows", ()):  # a STOW-RS: each instance the archive listed as stored
            self.add(SENT_FILE, row)
        if context.get("suboperations"):
            self.add(SUBOPERATIONS_FILE, context["suboperations"])
        for row in context.get("retrieved", ()):
            self.add(RETRIEVED_FILE, row)

    def add(self, name: str, row: Row) -> None:
        raise NotImplementedError


def request_sample(operation: str, latency_ms: float, size: int, error: str, context: RequestContext) -> Sample:
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
        modality=context.get("modality", ""),
    )


class RunRecords(Records):
    """The row files of one run folder; each opened on its first row (samples.csv always).

    A file that cannot be written (a full disk) ends the records, not the run's users: the
    error is kept in `write_error` for the run to stop on, and every complete row stays.
    `statuses` counts the samples by DICOM status (an A700 tells the archive is full).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._files: dict[str, CsvRows] = {SAMPLES_FILE: CsvRows(run_dir / SAMPLES_FILE, COLUMNS)}
        self.write_error: str | None = None
        self.statuses: Counter[object] = Counter()

    def add(self, name: str, row: Row) -> None:
        if self.write_error is not None:
            return
        if name == SAMPLES_FILE:
            self.statuses[row["status"]] += 1
        try:
            if name not in self._files:
                self._files[name] = CsvRows(self.run_dir / name, RECORD_FILES[name])
            self._files[name].write_row(row)
        except OSError as exc:
            self.write_error = f"{name}: {exc.strerror or exc}"

    def add_batch(self, batch: dict[str, list[Row]]) -> None:
        for name, rows in batch.items():
            for row in rows:
                self.add(name, row)

    @property
    def samples(self) -> int:
        return self._files[SAMPLES_FILE].rows

    def close(self) -> None:
        for name, rows in self._files.items():
            try:
                rows.close()
            except OSError as exc:
                self.write_error = self.write_error or f"{name}: {exc.strerror or exc}"


class RelayedRecords(Records):
    """The same rows in a worker process: they wait in memory until shipped to the master."""

    def __init__(self) -> None:
        self._batch: dict[str, list[Row]] = {}

    def add(self, name: str, row: Row) -> None:
        self._batch.setdefault(name, []).append(row)

    def drain(self) -> dict[str, list[Row]]:
        batch, self._batch = self._batch, {}
        return batch
