"""Locust users that speak DICOMweb (PS3.18): stow (STOW-RS), qido (QIDO-RS), wado (a reading workstation by
QIDO-RS and WADO-RS), the HTTP side of the DIMSE users in bench.load.users, on the same study pool.

They are locust FastHttpUsers (geventhttpclient): the user's client pool holds its keep-alive
connections, with the scenario's timeout. Requests go to that pool's HTTP client directly rather
than through FastHttpSession, which fires its own request event and retries or raises on a 4xx:
a sample row needs what the body says (instances that arrived, PS3.18 failure reasons), so these
users time each request themselves and fire one event with the same context as a DIMSE user's
(bench.load.users.fire_request). The status column holds the HTTP status.

Import this module only after locust (gevent) has patched the process (bench.load.engine does).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from http.client import HTTPException

import gevent
from geventhttpclient.url import URL
from locust import constant, constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

from bench.load.dicomweb import (
    DICOM_JSON,
    FRAMES_ACCEPT,
    STUDY_INSTANCE_UID,
    STUDY_RELATED_INSTANCES,
    WADO_ACCEPT,
    Answer,
    DescribedInstance,
    PoolFrames,
    StowBody,
    described_instances,
    first_value,
    frame_batches,
    read_frames,
    read_instances,
    stow_body,
    stow_outcome,
    study_uids,
)
from bench.load.rows import retrieved_rows, sent_row
from bench.load.users import (
    KNOWN_STUDIES_REFRESH,
    RETRY_PAUSE_S,
    WORKER_ID,
    LoadContext,
    between_studies,
    fire_request,
    reading_pace,
)
from bench.results.samples import QIDO_RS, STOW_RS, WADO_RS, WADO_RS_FRAMES, WADO_RS_METADATA, http_done
from bench.scenario.users import QidoSpec, StowSpec, UserGroup
from bench.studies.pool import PooledInstance
from server_under_test.upper_layer.status import NO_RESPONSE

REQUEST_TYPE = "DICOMweb"
QIDO_LEVELS = {"studies": "", "series": "/series", "instances": "/instances"}


class DicomwebFailed(Exception):
    """A DICOMweb request failed: no answer, an HTTP error, or an answer that does not add up."""


class DicomwebUser(FastHttpUser):
    """One HTTP client pool per user, to the target's DICOMweb base URL; subclasses say what a task does."""

    abstract = True
    user_type = ""
    context: LoadContext  # set on the per-run subclass (bench.load.roles.user_classes)
    _numbers = itertools.count(1)

    @property
    def host(self) -> str | None:  # read by FastHttpUser at spawn, once the target is up
        peer = self.context.peer
        return peer.dicomweb_url if peer else None

    @staticmethod
    def pacing(spec: UserGroup):
        return constant(0)

    @property
    def spec(self):
        return getattr(self.context.scenario.users, self.user_type)

    def on_start(self) -> None:
        self.user_id = f"{self.context.user_prefix}{self.user_type}-{next(self._numbers)}"
        base = URL(self.host)
        self.http = self.client.client.clientpool.get_client(base)  # the FastHttpUser's geventhttpclient pool
        self.base_path = base.path.rstrip("/")

    def connection_id(self) -> str:
        """The association column of an HTTP request: the user's keep-alive connections."""
        return f"{WORKER_ID}/{self.user_id}/http"

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes | StowBody = b"") -> Answer:
        """The request; DicomwebFailed when no HTTP answer came."""
        try:
            return Answer(self.http.request(method, self.base_path + path, body=body, headers=headers))
        except (OSError, HTTPException, gevent.Timeout) as exc:
            raise DicomwebFailed(f"{method} {path}: no answer from {self.host} ({type(exc).__name__}: {exc})") from None

    def fire(self, operation: str, started: float, t0: float, status: int, error: str = "", size: int = 0, **context):
        fire_request(
            self,
            REQUEST_TYPE,
            operation,
            started,
            t0,
            status,
            DicomwebFailed(error) if error else None,
            size,
            association=self.connection_id(),
            **context,
        )

    def request_json(self, operation: str, path: str, expected: object = None, **context) -> tuple[object | None, bool]:
        """A GET answered in DICOM JSON, timed and fired; (the JSON, whether it succeeded). With `expected` (a
        count of instances, as QIDO-RS gives it), the answer is a list of instances, counted against it."""
        started, t0 = time.time(), time.perf_counter()
        try:
            answer = self.send("GET", path, {"Accept": DICOM_JSON})
            status, body = answer.status, answer.body()
            answer.response.release()
        except DicomwebFailed as exc:
            self.fire(operation, started, t0, NO_RESPONSE, str(exc), **context)
            gevent.sleep(RETRY_PAUSE_S)
            return None, False
        error = "" if http_done(status) else f"{operation} HTTP {status}"
        try:
            found = json.loads(body) if body.strip() and not error else []
        except ValueError:
            found, error = None, f"{operation}: the answer is not JSON"
        if expected is not None and not error:
            described = len(found) if isinstance(found, list) else 0
            context["instances"] = described
            error = count_mismatch(operation, described, expected, "instances described")
        self.fire(operation, started, t0, status, error, size=len(body), **context)
        return found, not error

    def get_multipart(self, operation: str, path: str, accept: str, read) -> tuple[int, object | None, str]:
        """A GET answered in multipart, its parts read by `read(chunks, content_type)` as they stream in:
        (HTTP status or NO_RESPONSE, what `read` returned, the error); the caller times and fires it."""
        try:
            answer = self.send("GET", path, {"Accept": accept})
        except DicomwebFailed as exc:
            return NO_RESPONSE, None, str(exc)
        try:
            if not http_done(answer.status):
                answer.body()  # the connection is kept: its answer is read to the end
                return answer.status, None, f"{operation} HTTP {answer.status}"
            return answer.status, read(answer.chunks(), answer.content_type), ""
        except (ValueError, OSError, HTTPException) as exc:  # a broken multipart answer, or one cut short
            return answer.status, None, f"{operation}: {exc}"
        finally:
            answer.response.release()


class StowUser(DicomwebUser):
    """A modality over DICOMweb: STOW-RS whole studies (or `instances_per_request` of a study per POST), to
    /studies/{study}: an instance of another study is the archive's to refuse (a PS3.18 FailureReason).

    The body is built before the request is timed, as a C-STORE's data set is encoded before it is
    sent; instances the archive lists as stored go to sent.csv, as acknowledged C-STOREs do.
    """

    abstract = True
    user_type = "stow"

    @staticmethod
    def pacing(spec: StowSpec):
        if spec.studies_per_hour:
            return between_studies(constant_throughput(spec.studies_per_hour / 3600.0))
        return constant(0)

    def on_start(self) -> None:
        self.study: list[PooledInstance] = []
        super().on_start()

    @task
    def store_next_instances(self) -> None:
        if not self.study:
            self.study = self.context.pool.next_study()
        count = self.spec.instances_per_request or len(self.study)
        batch, self.study = self.study[:count], self.study[count:]
        body, content_type = stow_body(batch)
        study_uid = batch[0].changes["StudyInstanceUID"]
        headers = {"Content-Type": content_type, "Accept": DICOM_JSON}
        started, t0 = time.time(), time.perf_counter()
        try:
            answer = self.send("POST", f"/studies/{study_uid}", headers, body)  # the archive checks the study
            status, reply = answer.status, answer.body()
            answer.response.release()
        except DicomwebFailed as exc:
            self.fire(STOW_RS, started, t0, NO_RESPONSE, str(exc), study_instance_uid=study_uid)
            gevent.sleep(RETRY_PAUSE_S)
            return
        stored, failures = stow_outcome(parse_json(reply))
        acknowledged = [i for i in batch if i.sop_instance_uid in stored] if http_done(status) else []
        error = "" if http_done(status) and not failures else "; ".join([f"STOW-RS HTTP {status}", *failures])
        self.fire(
            STOW_RS,
            started,
            t0,
            status,
            error,
            size=sum(i.size for i in acknowledged),
            instances=len(acknowledged),
            frames=sum(i.frames for i in acknowledged),
            study_instance_uid=study_uid,
            sent_rows=[sent_row(i, "load") for i in acknowledged],
        )


def parse_json(body: bytes) -> object:
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        return None


class QidoUser(DicomwebUser):
    """QIDO-RS over the archive: all studies, or the series or instances of a study it found."""

    abstract = True
    user_type = "qido"

    @staticmethod
    def pacing(spec: QidoSpec):
        return constant_throughput(spec.queries_per_s) if spec.queries_per_s else constant(0)

    def on_start(self) -> None:
        self.studies: list[str] = []
        self.queries = 0
        super().on_start()

    def path(self) -> str:
        level = self.spec.level
        if level == "studies" or not self.studies or self.queries % KNOWN_STUDIES_REFRESH == 0:
            return "/studies"
        return f"/studies/{random.choice(self.studies)}{QIDO_LEVELS[level]}"

    @task
    def query(self) -> None:
        path = self.path()
        self.queries += 1
        found, ok = self.request_json(QIDO_RS, path)
        if ok and path == "/studies" and isinstance(found, list) and found:
            self.studies = study_uids(found)


class WadoUser(DicomwebUser):
    """A DICOMweb reading workstation: QIDO-RS the worklist, WADO-RS one study it has not read, read it, repeat.

    What it retrieves is the scenario's `retrieve`. "instances": the study as multipart application/dicom,
    read as it streams in. "frames", as a viewer does: the study's metadata (WADO-RS metadata), then every
    instance's frames, `frames_per_request` at a time (WADO-RS frames), each frame checked against the
    pool's pixel data when the user checks digests. "metadata": the study's metadata only. At least as
    many instances must arrive (or be described) as QIDO-RS said the study holds
    (NumberOfStudyRelatedInstances), or the request is an error, as a C-GET's sub-operation counts must
    match its arrivals.
    """

    abstract = True
    user_type = "wado"
    pool_frames: PoolFrames | None = None  # per run (the per-run subclass): built on the first frames checked

    @staticmethod
    def pacing(spec: UserGroup):
        return reading_pace

    def on_start(self) -> None:
        self.read: set[str] = set()
        self.reading_seconds = 0.0
        if self.spec.retrieve == "frames" and self.spec.check_digests:
            self.frames_checked()  # the pool's frames hashed now, not in a request's latency
        super().on_start()

    @task
    def read_next_study(self) -> None:
        self.reading_seconds = 0.0
        found, ok = self.request_json(QIDO_RS, f"/studies?includefield={STUDY_RELATED_INSTANCES}")
        worklist = {
            str(uid): first_value(item, STUDY_RELATED_INSTANCES)
            for item in (found if ok and isinstance(found, list) else [])
            if (uid := first_value(item, STUDY_INSTANCE_UID))
        }
        if not worklist:
            self.reading_seconds = self.spec.worklist_wait
            return
        unread = [uid for uid in worklist if uid not in self.read]
        study = random.choice(unread or list(worklist))
        retrieve = {"instances": self.retrieve, "frames": self.retrieve_frames, "metadata": self.retrieve_metadata}
        instances = retrieve[self.spec.retrieve](study, worklist[study])
        if instances is not None:
            self.read.add(study)
            if self.spec.reading_images_per_s:
                self.reading_seconds = instances / self.spec.reading_images_per_s

    def retrieve(self, study: str, expected: object) -> int | None:
        """WADO-RS the study's instances; how many arrived (None when the request failed)."""
        started, t0 = time.time(), time.perf_counter()

        def read(chunks, content_type):
            return read_instances(chunks, content_type, self.spec.check_digests)

        status, arrived, error = self.get_multipart(WADO_RS, f"/studies/{study}", WADO_ACCEPT, read)
        arrived = arrived or []
        error = error or count_mismatch(WADO_RS, len(arrived), expected, "instances arrived")
        self.fire(
            WADO_RS,
            started,
            t0,
            status,
            error,
            size=sum(f.bytes for f in arrived),
            instances=len(arrived),
            frames=sum(f.frames for f in arrived),
            study_instance_uid=study,
            retrieved=retrieved_rows(WADO_RS, self.user_id, arrived),
        )
        self.pause_if_unanswered(status)
        return len(arrived) if not error else None

    def study_metadata(self, study: str, expected: object) -> list | None:
        """WADO-RS the study's metadata, timed and fired: its instances' DICOM JSON (None when the request failed)."""
        path = f"/studies/{study}/metadata"
        found, ok = self.request_json(WADO_RS_METADATA, path, expected, study_instance_uid=study)
        return found if ok and isinstance(found, list) else None

    def retrieve_metadata(self, study: str, expected: object) -> int | None:
        """The study's metadata only; how many instances it describes (None when the request failed)."""
        found = self.study_metadata(study, expected)
        return None if found is None else len(found)

    def retrieve_frames(self, study: str, expected: object) -> int | None:
        """The study's metadata, then each instance's frames; how many instances were read (None when a request
        failed: the rest of the study is left, as a viewer showing an error would)."""
        found = self.study_metadata(study, expected)
        if found is None:
            return None
        instances = described_instances(found)
        for instance in instances:
            for numbers in frame_batches(instance.frames, self.spec.frames_per_request):
                if not self.retrieve_frame_batch(instance, numbers):
                    return None
        return len(instances)

    def retrieve_frame_batch(self, instance: DescribedInstance, numbers: list[int]) -> bool:
        """WADO-RS frames `numbers` of one instance; whether they all arrived (and are the pool's, when checked)."""
        started, t0 = time.time(), time.perf_counter()
        status, frames, error = self.get_multipart(
            WADO_RS_FRAMES, instance.frames_path(numbers), FRAMES_ACCEPT, read_frames
        )
        frames = frames or []
        if not error and len(frames) != len(numbers):
            error = f"{WADO_RS_FRAMES}: {len(frames)} frames arrived, {len(numbers)} were asked for"
        if not error and self.spec.check_digests:
            error = self.frames_checked().mismatch(instance, numbers, frames)
            error = f"{WADO_RS_FRAMES}: {error}" if error else ""
        self.fire(
            WADO_RS_FRAMES,
            started,
            t0,
            status,
            error,
            size=sum(map(len, frames)),
            frames=len(frames),
            study_instance_uid=instance.study_instance_uid,
            sop_instance_uid=instance.sop_instance_uid,
        )
        self.pause_if_unanswered(status)
        return not error

    def frames_checked(self) -> PoolFrames:
        """The pools' frames, hashed once per run and load process (at the first user's start)."""
        cls = type(self)
        if cls.pool_frames is None:
            cls.pool_frames = PoolFrames(self.context.pools.values())
        return cls.pool_frames

    @staticmethod
    def pause_if_unanswered(status: int) -> None:
        if status == NO_RESPONSE:  # a dead target is not hammered
            gevent.sleep(RETRY_PAUSE_S)


def count_mismatch(operation: str, arrived: int, expected: object, what: str) -> str:
    """The error of a WADO-RS study request with fewer instances than QIDO-RS said the study holds.

    More is no error: a study still being stored grows between the worklist query and the retrieval."""
    if isinstance(expected, int) and arrived < expected:
        return f"{operation}: {arrived} {what}, QIDO-RS said the study has {expected}"
    return ""
