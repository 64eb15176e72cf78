"""Locust users that speak DICOM: modality, reading workstation, query, echo.

In the style of locust's own non-HTTP clients: each user holds one association (opened in
on_start, reused, TCP_NODELAY, re-opened by the next task after a failure), times each
request itself and fires one locust request event with the sample's fields in its context;
one listener (bench.results.samples.Records.on_request) turns the events into rows. Paced
users wait through locust's wait-time helpers, set per run from the scenario (`pacing`).

Import this module only after locust (gevent) has patched the process (bench.load.engine does).
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from collections import deque
from dataclasses import dataclass

import gevent
from locust import User, constant, constant_pacing, constant_throughput, task
from locust.exception import StopUser
from pydicom.dataset import Dataset

from bench.dicom.peer import AssociationFailed, Peer
from bench.dicom.scu import (
    UNCOMPRESSED,
    RetrieveOutcome,
    ServiceUser,
    identifier,
    query_proposals,
    storage_proposals,
    study_identifier,
)
from bench.dicom.storage_scp import StorageSCP
from bench.load.rows import retrieved_rows, sent_row, suboperations_row
from bench.scenario.file import Scenario
from bench.scenario.users import EchoSpec, ModalitySpec, QuerySpec, UserGroup
from bench.studies.pool import PooledInstance, StudyPool
from server_under_test.upper_layer.status import NO_RESPONSE, is_done

WORKER_ID = f"{socket.gethostname()}-{os.getpid()}"
REQUEST_TYPE = "DIMSE"
RETRY_PAUSE_S = 1.0  # after a failed association, so a dead target is not hammered
KNOWN_STUDIES_REFRESH = 20  # query users re-read the study list every this many queries
QUERYABLE_POLL_S = 0.2  # between C-FINDs while an archive has not yet counted a study's every instance
QUERYABLE_WAIT_S = 600.0  # then the QUERYABLE sample fails


@dataclass
class LoadContext:
    """What every user of one load process shares."""

    scenario: Scenario
    pools: dict[str, StudyPool]  # by profile name (bench.load.pools); the [studies] profile's first
    peer: Peer | None = None  # known once the target is up
    scp: StorageSCP | None = None  # this process's C-MOVE destination
    destination_ae: str = ""  # the AE title the archive knows that SCP by
    user_prefix: str = ""  # keeps user ids unique across the worker processes of one run

    @property
    def pool(self) -> StudyPool:
        """The [studies] profile's pool."""
        return self.pools[self.scenario.studies.profile]

    def retrieval_syntaxes(self) -> tuple[list[str], list[str]]:
        """(SOP classes, transfer syntaxes) of every pool: what a C-GET may bring back."""
        pools = self.pools.values()
        sop_classes = sorted({c for p in pools for c in p.sop_classes})
        syntaxes = list(dict.fromkeys([s for p in pools for s in p.transfer_syntaxes] + UNCOMPRESSED))
        return sop_classes, syntaxes


def fire_request(
    user: User,
    request_type: str,
    operation: str,
    started: float,
    t0: float,
    status: int,
    exception: Exception | None,
    size: int,
    **context,
) -> None:
    """One request event: locust's statistics count it, the rows listener writes its sample.

    `context` adds what a sample row or a side file needs beyond locust's fields: the
    association (or HTTP connection) id, UIDs, instances, frames, and the plain rows of side
    files (bench.load.rows): never an object of the pool or the DICOM client, which the rows
    listener below them must not know. The user has `user_id` and `user_type`.
    """
    user.environment.events.request.fire(
        request_type=request_type,
        name=operation,
        response_time=(time.perf_counter() - t0) * 1000.0,  # exact: locust rounds only in its statistics
        response_length=size,
        exception=exception,
        context={
            "start": started,
            "worker": WORKER_ID,
            "user": user.user_id,
            "user_type": user.user_type,
            "status": status,
            **context,
        },
    )


def status_error(operation: str, status: int) -> str:
    return "" if is_done(status) else f"{operation} status 0x{status:04X}"


class DicomUser(User):
    """One association per user; subclasses say what it proposes and what a task does."""

    abstract = True
    user_type = ""
    context: LoadContext  # set on the per-run subclass (see user_classes)
    group: UserGroup | None = None  # the [users.modalities.NAME] table of a named group (see user_classes)
    _numbers = itertools.count(1)

    def proposals(self) -> list:
        raise NotImplementedError

    @staticmethod
    def pacing(spec: UserGroup):
        """The locust wait_time function for users of this type in a run with this spec."""
        return constant(0)

    def on_start(self) -> None:
        self.user_id = f"{self.context.user_prefix}{self.user_type}-{next(self._numbers)}"
        client = self.context.scenario.client
        self.scu = ServiceUser(self.context.peer, client.calling_ae, self.proposals(), client.max_pdu, client.timeout)
        self.ensure_association()

    def on_stop(self) -> None:
        self.scu.release()

    @property
    def spec(self):
        return self.group or getattr(self.context.scenario.users, self.user_type)

    def ensure_association(self) -> bool:
        if self.scu.connected:
            return True
        started, t0 = time.time(), time.perf_counter()
        try:
            self.scu.connect()
            return True
        except AssociationFailed as exc:
            self.fire("ASSOCIATE", started, t0, NO_RESPONSE, str(exc))
            gevent.sleep(RETRY_PAUSE_S)
            return False

    def association_id(self) -> str:
        return f"{WORKER_ID}/{self.user_id}/{self.scu.associations_opened}"

    def fire(
        self, operation: str, started: float, t0: float, status: int, error: str = "", size: int = 0, **context
    ) -> None:
        """One request event (fire_request) on this user's association."""
        fire_request(
            self,
            REQUEST_TYPE,
            operation,
            started,
            t0,
            status,
            AssociationFailed(error) if error else None,
            size,
            association=self.association_id(),
            **context,
        )

    def request(self, operation: str, call):
        """Run `call()`; (result, started, t0, error): result None when the association failed."""
        started, t0 = time.time(), time.perf_counter()
        try:
            return call(), started, t0, ""
        except AssociationFailed as exc:
            return None, started, t0, str(exc)


class ModalityUser(DicomUser):
    """A modality (the DSA unit): sends whole studies, one C-STORE per instance.

    Paced by studies per hour (the next study starts that long after the last one
    started), by instances per second, or flat out. A failed store is not retried: the
    study arrives incomplete, as it would from a modality whose link dropped.
    """

    abstract = True
    user_type = "modality"

    @staticmethod
    def pacing(spec: ModalitySpec):
        if spec.instances_per_s:
            return constant_throughput(spec.instances_per_s)
        if spec.studies_per_hour:
            return between_studies(constant_throughput(spec.studies_per_hour / 3600.0))
        return constant(0)

    @property
    def pool(self) -> StudyPool:
        return self.context.pools[self.spec.profile or self.context.scenario.studies.profile]

    def proposals(self) -> list:
        proposals = storage_proposals(self.pool.sop_classes, self.pool.transfer_syntaxes)
        return proposals + (query_proposals() if self.spec.check_queryable or self.spec.move_after else [])

    def on_start(self) -> None:
        self.study: deque[PooledInstance] = deque()  # popped from the left: O(1) for 24,000-instance studies
        self.studies_sent = 0
        self.study_uid, self.study_instances, self.study_acknowledged = "", 0, 0.0
        super().on_start()

    @task
    def store_next_instance(self) -> None:
        if not self.ensure_association():
            return
        if not self.study:
            if self.spec.studies is not None and self.studies_sent >= self.spec.studies:
                raise StopUser()
            self.study = deque(self.pool.next_study())
            self.studies_sent += 1
            self.study_uid, self.study_instances = self.study[0].changes["StudyInstanceUID"], len(self.study)
        instance = self.study.popleft()
        status, started, t0, error = self.request(
            "C-STORE",
            lambda: self.scu.store(
                instance.sop_class_uid,
                instance.sop_instance_uid,
                instance.transfer_syntax_uid,
                instance.encoded_chunks(),
            ),
        )
        status = NO_RESPONSE if status is None else status
        error = error or status_error("C-STORE", status)
        self.fire(
            "C-STORE",
            started,
            t0,
            status,
            error,
            size=instance.size,
            instances=1,
            frames=instance.frames,
            sop_instance_uid=instance.sop_instance_uid,
            study_instance_uid=instance.changes["StudyInstanceUID"],
            modality=instance.modalities,
            sent=None if error else sent_row(instance, "load"),  # sent.csv lists what the archive acknowledged
        )
        if not self.study:
            self.after_study(instance.modalities)

    def after_study(self, modalities: str) -> None:
        """What a modality does once its study is sent: check it is queryable, move it back (scenario options).

        A modality paced by studies per hour then releases its association, as scanners do between studies: its
        next study may come minutes later, past an archive's idle timeout (ours aborts after 60 s), and a store
        on an association the archive has closed fails with a broken pipe."""
        if self.spec.check_queryable:
            self.wait_until_queryable(modalities)
        if self.spec.move_after and self.scu.connected:
            self.move_study(modalities)
        if self.spec.studies_per_hour and self.scu.connected:
            self.scu.release()

    def wait_until_queryable(self, modalities: str) -> None:
        """C-FIND the study until the archive counts all its instances: one QUERYABLE sample, from the last store."""
        started, t0 = time.time(), time.perf_counter()
        query = identifier("STUDY", StudyInstanceUID=self.study_uid, NumberOfStudyRelatedInstances="")
        counted, status, error = 0, NO_RESPONSE, ""
        while counted < self.study_instances and time.perf_counter() - t0 < QUERYABLE_WAIT_S:
            result, _, _, error = self.request("C-FIND", lambda: self.scu.find(query))
            if result is None:
                break
            status, matches = result
            counted = max((int(m.get("NumberOfStudyRelatedInstances") or 0) for m in matches), default=0)
            if counted < self.study_instances:
                gevent.sleep(QUERYABLE_POLL_S)
        if not error and counted < self.study_instances:
            error = f"QUERYABLE: the archive counted {counted} of {self.study_instances} instances"
        self.fire(
            "QUERYABLE",
            started,
            t0,
            status,
            error,
            study_instance_uid=self.study_uid,
            modality=modalities,
        )

    def move_study(self, modalities: str) -> None:
        """C-MOVE the study just sent to this process's Storage SCP: the whole study's retrieval, timed."""
        moved, started, t0, error = self.request(
            "C-MOVE", lambda: self.scu.move(study_identifier(self.study_uid), self.context.destination_ae)
        )
        if not moved:
            self.fire("C-MOVE", started, t0, NO_RESPONSE, error, study_instance_uid=self.study_uid, modality=modalities)
            return
        message_id, outcome = moved
        outcome.gathered = self.context.scp.collect(message_id, self.study_uid)
        self.fire(
            "C-MOVE",
            started,
            t0,
            outcome.status,
            status_error("C-MOVE", outcome.status) or outcome.mismatch(),
            size=outcome.bytes,
            instances=outcome.instances,
            frames=outcome.frames,
            study_instance_uid=self.study_uid,
            modality=modalities,
            suboperations=suboperations_row("C-MOVE", self.user_id, self.study_uid, outcome),
        )


def between_studies(pace):
    """No wait inside a study, `pace` between studies: locust's helper then sees one whole
    study as one task run, so the next study starts its period after the last one started."""

    def wait_time(user: ModalityUser) -> float:
        return 0.0 if user.study else pace(user)

    return wait_time


def worklist_query() -> Dataset:
    return identifier(
        "STUDY",
        StudyInstanceUID="",
        StudyDate="",
        StudyTime="",
        NumberOfStudyRelatedInstances="",
        ModalitiesInStudy="",
    )


def modalities_value(value) -> str:
    """Modalities in Study as the samples hold it: sorted, backslash-separated ('CT\\PT'), as the pool writes it."""
    if value is None or value == "":
        return ""
    items = [value] if isinstance(value, str) else list(value)
    return "\\".join(sorted({str(v) for v in items if str(v)}))


class WorkstationUser(DicomUser):
    """A reading workstation: C-FIND the worklist, retrieve one study, read it, repeat.

    It reads a study it has not read yet (any study once all are read), by C-MOVE to
    the harness's Storage SCP or by C-GET, then "reads" for as long as its images take at
    `reading_images_per_s`, counted from the worklist query that found the study. The
    archive's sub-operation counts must match what arrived, or the request is an error.
    """

    abstract = True
    user_type = "workstation"

    @staticmethod
    def pacing(spec: UserGroup):
        return reading_pace

    def proposals(self) -> list:
        proposals = query_proposals()
        if self.spec.retrieve == "get":
            sop_classes, syntaxes = self.context.retrieval_syntaxes()
            proposals += storage_proposals(sop_classes, syntaxes, scp_role=True)
        return proposals

    def on_start(self) -> None:
        self.read: set[str] = set()
        self.modalities: dict[str, str] = {}  # study -> its modalities, as the worklist gave them
        self.reading_seconds = 0.0
        super().on_start()

    @task
    def read_next_study(self) -> None:
        self.reading_seconds = 0.0
        if not self.ensure_association():
            return
        worklist = self.query_worklist()
        if not worklist:
            self.reading_seconds = self.spec.worklist_wait
            return
        study = self.choose(worklist)
        outcome = self.retrieve(study)
        if outcome is not None:
            self.read.add(study)
            if self.spec.reading_images_per_s:
                self.reading_seconds = outcome.instances / self.spec.reading_images_per_s

    def query_worklist(self) -> list[str]:
        result, started, t0, error = self.request("C-FIND", lambda: self.scu.find(worklist_query()))
        status, matches = result if result else (NO_RESPONSE, [])
        self.fire("C-FIND", started, t0, status, error or status_error("C-FIND", status))
        self.modalities = {
            str(m.StudyInstanceUID): modalities_value(m.get("ModalitiesInStudy"))
            for m in matches
            if m.get("StudyInstanceUID")
        }
        return list(self.modalities)

    def choose(self, worklist: list[str]) -> str:
        """A study this reader has not read (any, once all are read): a shared worklist spreads its readers."""
        unread = [uid for uid in worklist if uid not in self.read]
        return random.choice(unread or worklist)

    def retrieve(self, study: str) -> RetrieveOutcome | None:
        spec, operation = self.spec, "C-GET" if self.spec.retrieve == "get" else "C-MOVE"
        if spec.retrieve == "get":
            outcome, started, t0, error = self.request(
                operation, lambda: self.scu.get(study_identifier(study), digests=spec.check_digests)
            )
        else:
            moved, started, t0, error = self.request(
                operation, lambda: self.scu.move(study_identifier(study), self.context.destination_ae)
            )
            outcome = None
            if moved:
                message_id, outcome = moved
                outcome.gathered = self.context.scp.collect(message_id, study)
        modality = self.modalities.get(study, "")
        if outcome is None:
            self.fire(operation, started, t0, NO_RESPONSE, error, study_instance_uid=study, modality=modality)
            return None
        self.fire(
            operation,
            started,
            t0,
            outcome.status,
            status_error(operation, outcome.status) or outcome.mismatch(),
            size=outcome.bytes,
            instances=outcome.instances,
            frames=outcome.frames,
            study_instance_uid=study,
            modality=modality,
            suboperations=suboperations_row(operation, self.user_id, study, outcome),
            retrieved=retrieved_rows(operation, self.user_id, outcome.gathered.hashed),
        )
        return outcome


def reading_pace(user: WorkstationUser) -> float:
    """locust's constant_pacing with this task's period (the study's reading time, or the
    worklist wait): the pacing state lives on the user, so the period may change per task."""
    return constant_pacing(user.reading_seconds)(user)


class QueryUser(DicomUser):
    """C-FIND over the archive: all studies (STUDY), or the series or images of a known study."""

    abstract = True
    user_type = "query"

    @staticmethod
    def pacing(spec: QuerySpec):
        return constant_throughput(spec.queries_per_s) if spec.queries_per_s else constant(0)

    def proposals(self) -> list:
        return query_proposals()

    def on_start(self) -> None:
        self.studies: list[str] = []
        self.queries = 0
        super().on_start()

    def identifier(self) -> Dataset:
        level = self.spec.level
        if level == "STUDY" or not self.studies or self.queries % KNOWN_STUDIES_REFRESH == 0:
            return worklist_query()
        image_keys = {"SOPInstanceUID": "", "NumberOfFrames": ""} if level == "IMAGE" else {}
        return identifier(
            level, StudyInstanceUID=random.choice(self.studies), SeriesInstanceUID="", Modality="", **image_keys
        )

    @task
    def query(self) -> None:
        if not self.ensure_association():
            return
        identifier = self.identifier()
        self.queries += 1
        result, started, t0, error = self.request("C-FIND", lambda: self.scu.find(identifier))
        status, matches = result if result else (NO_RESPONSE, [])
        self.fire("C-FIND", started, t0, status, error or status_error("C-FIND", status))
        if identifier.QueryRetrieveLevel == "STUDY" and matches:
            self.studies = [str(m.StudyInstanceUID) for m in matches if m.get("StudyInstanceUID")]


class EchoUser(DicomUser):
    """C-ECHO every `interval` seconds."""

    abstract = True
    user_type = "echo"

    @staticmethod
    def pacing(spec: EchoSpec):
        return constant(spec.interval)

    def proposals(self) -> list:
        return query_proposals()[:1]

    @task
    def echo(self) -> None:
        if not self.ensure_association():
            return
        status, started, t0, error = self.request("C-ECHO", self.scu.echo)
        status = NO_RESPONSE if status is None else status
        self.fire("C-ECHO", started, t0, status, error or status_error("C-ECHO", status))
