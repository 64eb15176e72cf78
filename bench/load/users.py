"""Locust users that speak DICOM: modality, reading workstation, query, echo.

In the style of locust's own non-HTTP clients: each user holds one association (opened in
on_start, reused, TCP_NODELAY, re-opened by the next task after a failure), times each
request itself, fires a locust request event and writes one sample row. Latencies in the
samples are exact; locust's own statistics round them.

Import this module only after locust (gevent) has patched the process (bench.load.engine does).
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from dataclasses import dataclass

import gevent
from locust import User, task
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
from bench.load.scenario import Scenario
from bench.load.send import STORED
from bench.results.samples import RETRIEVED_FILE, SENT_FILE, SUBOPERATIONS_FILE, Sample, sent_row
from bench.studies.pool import PooledInstance, StudyPool

WORKER_ID = f"{socket.gethostname()}-{os.getpid()}"
REQUEST_TYPE = "DIMSE"
RETRY_PAUSE_S = 1.0  # after a failed association, so a dead target is not hammered
KNOWN_STUDIES_REFRESH = 20  # query users re-read the study list every this many queries


@dataclass
class LoadContext:
    """What every user of one load process shares."""

    scenario: Scenario
    pool: StudyPool
    records: object  # bench.results.samples.RunRecords, or RelayedRecords in a worker process
    peer: Peer | None = None  # known once the target is up
    scp: StorageSCP | None = None  # this process's C-MOVE destination
    destination_ae: str = ""  # the AE title the archive knows that SCP by
    user_prefix: str = ""  # keeps user ids unique across the worker processes of one run


def status_error(operation: str, status: int) -> str:
    return "" if status in STORED else f"{operation} status 0x{status:04X}"


class DicomUser(User):
    """One association per user; subclasses say what it proposes and what a task does."""

    abstract = True
    user_type = ""
    context: LoadContext  # set on the per-run subclass (see user_classes)
    _numbers = itertools.count(1)

    def proposals(self) -> list:
        raise NotImplementedError

    def on_start(self) -> None:
        self.user_id = f"{self.context.user_prefix}{self.user_type}-{next(self._numbers)}"
        client = self.context.scenario.client
        self.scu = ServiceUser(self.context.peer, client.calling_ae, self.proposals(), client.max_pdu, client.timeout)
        self.ensure_association()

    def on_stop(self) -> None:
        self.scu.release()

    @property
    def spec(self):
        return getattr(self.context.scenario.users, self.user_type)

    def ensure_association(self) -> bool:
        if self.scu.connected:
            return True
        started, t0 = time.time(), time.perf_counter()
        try:
            self.scu.connect()
            return True
        except AssociationFailed as exc:
            self.record("ASSOCIATE", started, t0, status=-1, error=str(exc))
            gevent.sleep(RETRY_PAUSE_S)
            return False

    def association_id(self) -> str:
        return f"{WORKER_ID}/{self.user_id}/{self.scu.associations_opened}"

    def record(
        self,
        operation: str,
        started: float,
        t0: float,
        status: int,
        error: str = "",
        instances: int = 0,
        frames: int = 0,
        size: int = 0,
        sop_instance_uid: str = "",
        study_instance_uid: str = "",
    ) -> None:
        latency_ms = (time.perf_counter() - t0) * 1000.0
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=operation,
            response_time=latency_ms,
            response_length=size,
            exception=AssociationFailed(error) if error else None,
            context={"user": self.user_id},
        )
        self.context.records.sample(
            Sample(
                start=started,
                worker=WORKER_ID,
                user=self.user_id,
                user_type=self.user_type,
                association=self.association_id(),
                operation=operation,
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=study_instance_uid,
                instances=instances,
                frames=frames,
                bytes=size,
                latency_ms=latency_ms,
                status=status,
                error=error,
            )
        )

    def request(self, operation: str, call):
        """Run `call()`; (result, started, t0, error) with a failed association as status -1."""
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

    def proposals(self) -> list:
        pool = self.context.pool
        return storage_proposals(pool.sop_classes, pool.transfer_syntaxes)

    def on_start(self) -> None:
        self.study: list[PooledInstance] = []
        self.study_started = self.last_store = time.monotonic()
        super().on_start()

    @task
    def store_next_instance(self) -> None:
        if not self.ensure_association():
            return
        if not self.study:
            self.study = self.context.pool.next_study()
            self.study_started = time.monotonic()
        instance = self.study.pop(0)
        self.last_store = time.monotonic()
        status, started, t0, error = self.request(
            "C-STORE",
            lambda: self.scu.store(
                instance.sop_class_uid,
                instance.sop_instance_uid,
                instance.transfer_syntax_uid,
                instance.encoded_chunks(),
            ),
        )
        status = -1 if status is None else status
        error = error or status_error("C-STORE", status)
        self.record(
            "C-STORE",
            started,
            t0,
            status,
            error,
            instances=1,
            frames=instance.frames,
            size=instance.size,
            sop_instance_uid=instance.sop_instance_uid,
            study_instance_uid=instance.changes["StudyInstanceUID"],
        )
        if not error:
            self.context.records.add(SENT_FILE, sent_row(instance, "load"))

    def wait_time(self) -> float:
        spec = self.spec
        if spec.instances_per_s:
            return max(0.0, self.last_store + 1.0 / spec.instances_per_s - time.monotonic())
        if spec.studies_per_hour and not self.study:
            return max(0.0, self.study_started + 3600.0 / spec.studies_per_hour - time.monotonic())
        return 0.0


def worklist_query() -> Dataset:
    return identifier("STUDY", StudyInstanceUID="", StudyDate="", StudyTime="", NumberOfStudyRelatedInstances="")


class WorkstationUser(DicomUser):
    """A reading workstation: C-FIND the worklist, retrieve one study, read it, repeat.

    It reads a study it has not read yet (any study once all are read), by C-MOVE to
    the harness's Storage SCP or by C-GET, then "reads" for as long as its
    images take at `reading_images_per_s` counted from the start of the retrieval. The
    archive's sub-operation counts must match what arrived, or the request is an error.
    """

    abstract = True
    user_type = "workstation"

    def proposals(self) -> list:
        proposals = query_proposals()
        if self.spec.retrieve == "get":
            pool = self.context.pool
            syntaxes = list(dict.fromkeys(pool.transfer_syntaxes + UNCOMPRESSED))
            proposals += storage_proposals(pool.sop_classes, syntaxes, scp_role=True)
        return proposals

    def on_start(self) -> None:
        self.read: set[str] = set()
        self.busy_until = 0.0
        super().on_start()

    def wait_time(self) -> float:
        return max(0.0, self.busy_until - time.monotonic())

    @task
    def read_next_study(self) -> None:
        if not self.ensure_association():
            return
        worklist = self.query_worklist()
        if not worklist:
            self.busy_until = time.monotonic() + self.spec.worklist_wait
            return
        study = self.choose(worklist)
        began = time.monotonic()
        outcome = self.retrieve(study)
        if outcome is not None:
            self.read.add(study)
            if self.spec.reading_images_per_s:
                self.busy_until = began + len(outcome.arrivals) / self.spec.reading_images_per_s

    def query_worklist(self) -> list[str]:
        result, started, t0, error = self.request("C-FIND", lambda: self.scu.find(worklist_query()))
        status, matches = result if result else (-1, [])
        self.record("C-FIND", started, t0, status, error or status_error("C-FIND", status))
        return [str(m.StudyInstanceUID) for m in matches if m.get("StudyInstanceUID")]

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
                outcome.arrivals = self.context.scp.collect(message_id, study)
        if outcome is None:
            self.record(operation, started, t0, -1, error, study_instance_uid=study)
            return None
        error = status_error(operation, outcome.status) or outcome.mismatch()
        self.record(
            operation,
            started,
            t0,
            outcome.status,
            error,
            instances=len(outcome.arrivals),
            frames=outcome.frames,
            size=outcome.bytes,
            study_instance_uid=study,
        )
        self.context.records.add(
            SUBOPERATIONS_FILE,
            {
                "operation": operation,
                "user": self.user_id,
                "study_instance_uid": study,
                "status": outcome.status,
                "completed": outcome.completed,
                "failed": outcome.failed,
                "warning": outcome.warning,
                "arrived": len(outcome.arrivals),
                "arrived_bytes": outcome.bytes,
            },
        )
        for arrival in outcome.arrivals if spec.check_digests else []:
            self.context.records.add(
                RETRIEVED_FILE,
                {
                    "sop_instance_uid": arrival.sop_instance_uid,
                    "study_instance_uid": arrival.study_instance_uid,
                    "bytes": arrival.bytes,
                    "digest": arrival.digest,
                    "operation": operation,
                    "user": self.user_id,
                },
            )
        return outcome


class QueryUser(DicomUser):
    """C-FIND over the archive: all studies (STUDY), or the series or images of a known study."""

    abstract = True
    user_type = "query"

    def proposals(self) -> list:
        return query_proposals()

    def on_start(self) -> None:
        self.studies: list[str] = []
        self.queries = 0
        self.last_query = time.monotonic()
        super().on_start()

    def wait_time(self) -> float:
        rate = self.spec.queries_per_s
        return max(0.0, self.last_query + 1.0 / rate - time.monotonic()) if rate else 0.0

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
        self.last_query = time.monotonic()
        result, started, t0, error = self.request("C-FIND", lambda: self.scu.find(identifier))
        status, matches = result if result else (-1, [])
        self.record("C-FIND", started, t0, status, error or status_error("C-FIND", status))
        if identifier.QueryRetrieveLevel == "STUDY" and matches:
            self.studies = [str(m.StudyInstanceUID) for m in matches if m.get("StudyInstanceUID")]


class EchoUser(DicomUser):
    """C-ECHO every `interval` seconds."""

    abstract = True
    user_type = "echo"

    def proposals(self) -> list:
        return query_proposals()[:1]

    def wait_time(self) -> float:
        return self.spec.interval

    @task
    def echo(self) -> None:
        if not self.ensure_association():
            return
        status, started, t0, error = self.request("C-ECHO", self.scu.echo)
        status = -1 if status is None else status
        self.record("C-ECHO", started, t0, status, error or status_error("C-ECHO", status))


ROLES = {"modality": ModalityUser, "workstation": WorkstationUser, "query": QueryUser, "echo": EchoUser}


def user_classes(scenario: Scenario, context: LoadContext) -> list[type[User]]:
    """This run's user classes: one per user type in the scenario, named after the role (the
    master and its workers find each other's classes by name), sized by count or weight."""
    classes = []
    for name, group in scenario.users.groups().items():
        if group.count == 0:
            continue  # a type switched off
        role = ROLES[name]
        attributes = {"abstract": False, "context": context, "weight": group.weight}
        if group.count is not None:
            attributes["fixed_count"] = group.count
        classes.append(type(role.__name__, (role,), attributes))
    return classes
