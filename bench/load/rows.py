"""Row values of what the load sent and retrieved: pool instances and retrieve outcomes made plain.

The rows listener (bench.results.samples.Records) sits below the study pool and the DICOM
client, so it gets plain values in the request event's context, never their objects: a
sent.csv row for an acknowledged C-STORE, a suboperations.csv row and the retrieved.csv rows
for a C-MOVE or C-GET; the sent.csv rows of a STOW-RS.
"""

from __future__ import annotations

from bench.dicom.scu import RetrieveOutcome
from bench.studies.pool import PooledInstance


def sent_row(instance: PooledInstance, source: str) -> dict[str, object]:
    """The sent.csv row of an instance the archive acknowledged (`source`: "load" or "prefill")."""
    return {
        "sop_instance_uid": instance.sop_instance_uid,
        "study_instance_uid": instance.changes["StudyInstanceUID"],
        "sop_class_uid": instance.sop_class_uid,
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "bytes": instance.size,
        "digest": instance.digest(),
        "source": source,
    }


def suboperations_row(operation: str, user: str, study: str, outcome: RetrieveOutcome) -> dict[str, object]:
    """The suboperations.csv row of one C-MOVE or C-GET: the archive's counts next to what arrived."""
    return {
        "operation": operation,
        "user": user,
        "study_instance_uid": study,
        "status": outcome.status,
        "completed": outcome.completed,
        "failed": outcome.failed,
        "warning": outcome.warning,
        "arrived": outcome.instances,
        "arrived_bytes": outcome.bytes,
    }


def retrieved_rows(operation: str, user: str, arrivals) -> list[dict[str, object]]:
    """The retrieved.csv rows of a retrieval's arrivals (a C-GET's or C-MOVE's, or a WADO-RS's received files), for
    those hashed (only when the workstation checks digests)."""
    return [
        {
            "sop_instance_uid": arrival.sop_instance_uid,
            "study_instance_uid": arrival.study_instance_uid,
            "bytes": arrival.bytes,
            "digest": arrival.digest,
            "operation": operation,
            "user": user,
        }
        for arrival in arrivals
        if arrival.digest
    ]
