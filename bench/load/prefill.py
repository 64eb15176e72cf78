"""The prefill stage: store a stated number of studies before the load starts.

Reading workstations need a worklist from the first second, and query latency grows with
the index, so a run can begin with the archive holding `[studies] prefill` studies. They
go in over a few associations on the fast path; they are not load (no sample rows) but
are listed in sent.csv, so `verify` checks them too. A failed prefill fails the run: its
figures would describe a different archive than the scenario says.
"""

from __future__ import annotations

import threading

from bench.common.errors import UserError
from bench.dicom.peer import AssociationFailed, Peer
from bench.dicom.scu import ServiceUser, storage_proposals
from bench.load.rows import sent_row
from bench.load.send import run_in_threads
from bench.results.run_record import PrefillRecord
from bench.results.samples import SENT_FILE
from bench.scenario.settings import ClientSpec
from bench.studies.pool import StudyPool
from server_under_test.upper_layer.status import is_done

ASSOCIATIONS = 4


def _store_studies(
    pool: StudyPool, user: ServiceUser, remaining: list[int], records, lock: threading.Lock, totals: dict
) -> None:
    while True:
        with lock:
            if not remaining:
                break
            remaining.pop()
            study = pool.next_study()
        try:
            if not user.connected:
                user.connect()
            for instance in study:
                status = user.store(
                    instance.sop_class_uid,
                    instance.sop_instance_uid,
                    instance.transfer_syntax_uid,
                    instance.encoded_chunks(),
                )
                if not is_done(status):
                    raise AssociationFailed(f"C-STORE status 0x{status:04X}")
                records.add(SENT_FILE, sent_row(instance, "prefill"))
                with lock:
                    totals["instances"] += 1
                    totals["bytes"] += instance.size
        except AssociationFailed as exc:
            totals["errors"].append(str(exc))
            break
    user.release()


def prefill(pool: StudyPool, peer: Peer, client: ClientSpec, studies: int, records) -> dict:
    """Store `studies` fresh studies; return what went in. Raises UserError on any failure."""
    totals = {"instances": 0, "bytes": 0, "errors": []}
    remaining, lock = list(range(studies)), threading.Lock()
    proposals = storage_proposals(pool.sop_classes, pool.transfer_syntaxes)
    seconds = run_in_threads(
        [
            lambda: _store_studies(
                pool,
                ServiceUser(peer, client.calling_ae, proposals, client.max_pdu, client.timeout),
                remaining,
                records,
                lock,
                totals,
            )
            for _ in range(min(ASSOCIATIONS, studies))
        ]
    )
    if totals["errors"]:
        raise UserError(f"prefill of {studies} studies failed: {totals['errors'][0]}")
    return PrefillRecord(
        studies=studies, instances=totals["instances"], bytes=totals["bytes"], seconds=round(seconds, 3)
    )
