"""The verify stage: does the archive hold, byte for byte, every instance it acknowledged?

sent.csv lists each acknowledged instance with the digest of the dataset that was sent
(bench.studies.integrity). Verification C-GETs every such study back (or, with protocol
"dicomweb", WADO-RS: QIDO-RS and WADO-RS at the archive's DICOMweb base URL), hashes each instance, and
compares: an instance that does not come back is lost, one whose digest differs was
changed. When workstations hashed what they retrieved (retrieved.csv), those digests are
held against sent.csv too. Any loss or difference makes the run's verification fail.

A run whose archive recycled (at_capacity = "recycle") lost its oldest studies on purpose:
a C-FIND at study level tells which studies the archive still holds, and the instances of
the others are skipped (and counted), not reported lost.

A native run's archive is gone after the run unless it kept its data: `pacsbench verify`
then restarts the archive on the kept folder; `pacsbench run --verify` verifies before
the archive stops. A guest's (kvm, tcg), Orthanc's or dcmqrscp's data is deleted with the run
unless keep_data: verifying it then is a one-line error (exit 2), not "every instance lost".
An earlier result in run.json["verify"] is never overwritten: a later verification goes to
run.json["verify_later"] (a list) and verify-N.json.
"""

from __future__ import annotations

import csv
import json
import os
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

from bench.common.errors import UserError
from bench.dicom.peer import AssociationFailed, Peer
from bench.dicom.scu import (
    UNCOMPRESSED,
    ServiceUser,
    identifier,
    query_proposals,
    storage_proposals,
    study_identifier,
)
from bench.load.dicomweb import DICOM_JSON, WADO_ACCEPT, read_instances, study_uids
from bench.results.record_base import write_record
from bench.results.records import VERIFY_FILE
from bench.results.run_file import read_run_json, write_run_json
from bench.results.run_record import RunRecord, VerifyExamples, VerifyRecord
from bench.results.samples import RETRIEVED_FILE, SENT_FILE
from bench.scenario.settings import ClientSpec
from bench.scenario.targets import target_spec
from bench.targets import make_target

EXAMPLES_KEPT = 10


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _proposals(sent: list[dict]) -> list:
    classes = sorted({r["sop_class_uid"] for r in sent})
    syntaxes = list(dict.fromkeys(sorted({r["transfer_syntax_uid"] for r in sent}) + UNCOMPRESSED))
    return query_proposals() + storage_proposals(classes, syntaxes, scp_role=True)


def recycling(run_dir: Path) -> bool:
    """Did the run's archive recycle its oldest studies at capacity (run.json's scenario)?"""
    try:
        target = read_run_json(run_dir).scenario.get("target", {})
    except UserError:
        return False
    return target.get("kind") == "native" and target.get("at_capacity") == "recycle"


def held_studies(user: ServiceUser) -> set[str]:
    """The Study Instance UIDs the archive holds now (C-FIND at study level, every study)."""
    if not user.connected:
        user.connect()
    status, matches = user.find(identifier("STUDY", StudyInstanceUID=""))
    if status != 0:
        raise UserError(f"C-FIND of the archive's studies failed with status 0x{status:04X}")
    return {str(match.StudyInstanceUID) for match in matches}


def returned_digests(user: ServiceUser, studies: list[str]) -> tuple[dict[str, str], list[str]]:
    """C-GET each study: the digest of every instance that came back (by SOP Instance UID), and the failed requests."""
    returned: dict[str, str] = {}
    failed_requests: list[str] = []
    for study in studies:
        try:
            if not user.connected:
                user.connect()
            outcome = user.get(study_identifier(study), digests=True)
            returned.update({a.sop_instance_uid: a.digest for a in outcome.gathered.hashed})
        except AssociationFailed as exc:
            failed_requests.append(f"study {study}: {exc}")
    return returned, failed_requests


def retrieval_user(peer: Peer, sent: list[dict], client: ClientSpec) -> ServiceUser:
    """An association that can C-FIND and C-GET back everything in these sent.csv rows."""
    return ServiceUser(peer, client.calling_ae, _proposals(sent), client.max_pdu, client.timeout)


class DimseRetrieval:
    """Verification by DIMSE: C-FIND the studies held, C-GET each study back."""

    operation = "C-GET"

    def __init__(self, peer: Peer, sent: list[dict], client: ClientSpec):
        self.user = retrieval_user(peer, sent, client)

    def held_studies(self) -> set[str]:
        return held_studies(self.user)

    def returned_digests(self, studies: list[str]) -> tuple[dict[str, str], list[str]]:
        return returned_digests(self.user, studies)

    def close(self) -> None:
        self.user.release()


class WadoRetrieval:
    """Verification by DICOMweb: QIDO-RS the studies held, WADO-RS each study back (multipart, streamed)."""

    operation = "WADO-RS"

    def __init__(self, base_url: str, timeout: float):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def _get(self, path: str, accept: str):
        request = urllib.request.Request(self.base_url + path, headers={"Accept": accept})
        return urllib.request.urlopen(request, timeout=self.timeout)

    def held_studies(self) -> set[str]:
        try:
            with self._get("/studies", DICOM_JSON) as answer:
                body = answer.read()
        except (OSError, urllib.error.URLError) as exc:
            raise UserError(f"QIDO-RS of the archive's studies failed: {exc}") from None
        return set(study_uids(json.loads(body) if body.strip() else []))

    def returned_digests(self, studies: list[str]) -> tuple[dict[str, str], list[str]]:
        returned: dict[str, str] = {}
        failed_requests: list[str] = []
        for study in studies:
            try:
                with self._get(f"/studies/{study}", WADO_ACCEPT) as answer:
                    chunks = iter(lambda answer=answer: answer.read(1 << 16), b"")
                    arrived = read_instances(chunks, answer.headers.get("Content-Type", ""), with_digest=True)
                returned.update({f.sop_instance_uid: f.digest for f in arrived})
            except (OSError, urllib.error.URLError, ValueError) as exc:
                failed_requests.append(f"study {study}: {exc}")
        return returned, failed_requests

    def close(self) -> None:
        pass


def retrieval(peer: Peer, sent: list[dict], client: ClientSpec, protocol: str) -> DimseRetrieval | WadoRetrieval:
    """How the instances come back: C-GET (dimse), or WADO-RS at the archive's DICOMweb base URL (dicomweb)."""
    if protocol == "dimse":
        return DimseRetrieval(peer, sent, client)
    if not peer.dicomweb_url:
        raise UserError(f"cannot verify by WADO-RS: the archive at {peer} has no DICOMweb base URL")
    return WadoRetrieval(peer.dicomweb_url, client.timeout)


def verify_against(
    peer: Peer, run_dir: Path, client: ClientSpec | None = None, protocol: str = "dimse"
) -> VerifyRecord:
    """C-GET (or WADO-RS) every study in sent.csv from `peer` and compare; write verify.json and run.json['verify']."""
    client = client or ClientSpec()
    sent = read_rows(run_dir / SENT_FILE)
    if not sent:
        raise UserError(f"{run_dir}: no {SENT_FILE}: the run acknowledged no instance (or predates verification)")
    started = time.perf_counter()
    user = retrieval(peer, sent, client, protocol)
    sent_digests = {r["sop_instance_uid"]: r["digest"] for r in sent}  # workstations read recycled studies too
    skipped = 0
    if recycling(run_dir):
        held = user.held_studies()
        skipped = sum(r["study_instance_uid"] not in held for r in sent)
        sent = [r for r in sent if r["study_instance_uid"] in held]
    expected = {r["sop_instance_uid"]: r for r in sent}
    by_study = defaultdict(list)
    for row in sent:
        by_study[row["study_instance_uid"]].append(row["sop_instance_uid"])
    returned, failed_requests = user.returned_digests(list(by_study))
    user.close()
    if by_study and len(failed_requests) == len(by_study):
        # Not one association: the archive is not there (stopped, data gone), which says nothing of what it kept.
        raise UserError(f"{run_dir}: no answer from {peer} ({failed_requests[0]}): nothing verified, nothing recorded")
    missing = [uid for uid in expected if uid not in returned]
    different = [uid for uid in expected if uid in returned and returned[uid] != expected[uid]["digest"]]
    retrieved = read_rows(run_dir / RETRIEVED_FILE)
    retrieved_different = [
        r["sop_instance_uid"]
        for r in retrieved
        if r["sop_instance_uid"] in sent_digests and r["digest"] != sent_digests[r["sop_instance_uid"]]
    ]
    result = VerifyRecord(
        ok=not (missing or different or retrieved_different or failed_requests),
        target=peer.dicomweb_url if protocol == "dicomweb" else str(peer),
        protocol=user.operation,
        instances=len(expected),
        studies=len(by_study),
        skipped_recycled=skipped,
        returned=len(returned),
        missing=len(missing),
        different=len(different),
        retrieved_checked=len(retrieved),
        retrieved_different=len(retrieved_different),
        failed_requests=failed_requests[:EXAMPLES_KEPT],
        examples=VerifyExamples(
            missing=missing[:EXAMPLES_KEPT],
            different=different[:EXAMPLES_KEPT],
            retrieved_different=retrieved_different[:EXAMPLES_KEPT],
        ),
        seconds=round(time.perf_counter() - started, 3),
    )
    record_result(run_dir, result)
    return result


def record_result(run_dir: Path, result: VerifyRecord) -> None:
    """verify.json and run.json["verify"] for the first verification; later ones beside, never over, it."""
    record = read_run_json(run_dir)
    if record.verify is None:
        write_record(run_dir / VERIFY_FILE, result)
        record.verify = result
    else:
        record.verify_later = [*record.verify_later, result]
        write_record(run_dir / f"verify-{len(record.verify_later) + 1}.json", result)
    write_run_json(run_dir, record)


def data_gone(run_dir: Path, record: RunRecord) -> str | None:
    """Why a run's stored instances cannot be verified any more (deleted with the run), or None."""
    kind = record.target.kind if record.target else None
    kept = record.target.storage_kept if record.target else None
    if kept is None:
        kept = (record.scenario.get("target") or {}).get("keep_data")
    if kind in ("kvm", "tcg") and not kept:
        return (
            f"{run_dir}: the {kind} guest's data disk was deleted after the run: nothing left to verify; "
            "use `pacsbench run --verify` (by WADO-RS: `--verify-protocol dicomweb`)"
        )
    if kind in ("orthanc", "dcmtk") and not kept:
        return (
            f"{run_dir}: the {kind} archive's images were removed after the run (keep_data = false): nothing "
            "left to verify; use `pacsbench run --verify`, or set keep_data = true in [target]"
        )
    return None


def summary_line(result: VerifyRecord) -> str:
    skipped = result.skipped_recycled
    recycled = f"; {skipped} instances of recycled studies skipped" if skipped else ""
    if result.ok:
        return (
            f"verified {result.instances} instances in {result.studies} studies: all returned "
            f"byte-identical ({result.retrieved_checked} workstation retrievals also matched){recycled}"
        )
    problems = [
        f"{count} {label}"
        for count, label in (
            (result.missing, "lost"),
            (result.different, "changed"),
            (result.retrieved_different, "retrieved changed"),
        )
        if count
    ]
    failed = f"{len(result.failed_requests)} failed {result.protocol} requests"
    problems += [failed] if result.failed_requests else []
    return f"verification FAILED for {result.instances} acknowledged instances: {', '.join(problems)}{recycled}"


def verify_run(run_dir: Path, protocol: str = "dimse") -> VerifyRecord:
    """`pacsbench verify RUN`: reach the run's archive again (a native one restarted on its kept data), by C-GET
    (dimse) or WADO-RS (dicomweb)."""
    record = read_run_json(run_dir)
    scenario = record.scenario
    client = ClientSpec.model_validate(scenario.get("client", {}))
    target = record.target
    if gone := data_gone(run_dir, record):
        raise UserError(gone)
    if target is None or target.kind != "native":
        if target is None or not target.port:
            raise UserError(f"{run_dir}: run.json names no target address to verify against")
        peer = Peer(target.host, target.port, target.ae_title, target.dicomweb_url)
        return verify_against(peer, run_dir, client, protocol)
    if not (run_dir / "archive" / "storage").is_dir():
        raise UserError(
            f"{run_dir}: the native archive's images were removed after the run (keep_data = false); "
            "use `pacsbench run --verify`, or set keep_data = true in [target]"
        )
    spec = target_spec({**scenario["target"], "keep_data": True, "port": 0, "dicomweb": protocol == "dicomweb"})
    folder = run_dir / "verify"
    folder.mkdir(exist_ok=True)
    if not (folder / "archive").exists():
        os.symlink("../archive", folder / "archive")  # the native target serves <folder>/archive
    native = make_target(spec, client)
    try:
        native.start(folder)
        return verify_against(native.peer, run_dir, client, protocol)
    finally:
        native.stop()
