"""The verify stage: does the archive hold, byte for byte, every instance it acknowledged?

sent.csv lists each acknowledged instance with the digest of the dataset that was sent
(bench.studies.integrity). Verification C-GETs every such study back, hashes each instance, and
compares: an instance that does not come back is lost, one whose digest differs was
changed. When workstations hashed what they retrieved (retrieved.csv), those digests are
held against sent.csv too. Any loss or difference makes the run's verification fail.

A native run's archive is gone after the run unless it kept its data: `pacsbench verify`
then restarts the archive on the kept folder; `pacsbench run --verify` verifies before
the archive stops.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import defaultdict
from pathlib import Path

from bench.common.errors import UserError
from bench.dicom.peer import AssociationFailed, Peer
from bench.dicom.scu import UNCOMPRESSED, ServiceUser, query_proposals, storage_proposals, study_identifier
from bench.load.scenario import ClientSpec, TargetSpec
from bench.results.run_folder import read_run_json, write_run_json
from bench.results.samples import RETRIEVED_FILE, SENT_FILE
from bench.targets import make_target

VERIFY_FILE = "verify.json"
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


def verify_against(peer: Peer, run_dir: Path, client: ClientSpec | None = None) -> dict:
    """C-GET every study in sent.csv from `peer` and compare; write verify.json and run.json['verify']."""
    client = client or ClientSpec()
    sent = read_rows(run_dir / SENT_FILE)
    if not sent:
        raise UserError(f"{run_dir}: no {SENT_FILE}: the run acknowledged no instance (or predates verification)")
    expected = {r["sop_instance_uid"]: r for r in sent}
    by_study = defaultdict(list)
    for row in sent:
        by_study[row["study_instance_uid"]].append(row["sop_instance_uid"])
    started = time.perf_counter()
    user = ServiceUser(peer, client.calling_ae, _proposals(sent), client.max_pdu, client.timeout)
    returned: dict[str, str] = {}
    failed_requests: list[str] = []
    for study in by_study:
        try:
            if not user.connected:
                user.connect()
            outcome = user.get(study_identifier(study), digests=True)
            returned.update({a.sop_instance_uid: a.digest for a in outcome.arrivals})
        except AssociationFailed as exc:
            failed_requests.append(f"study {study}: {exc}")
    user.release()
    missing = [uid for uid in expected if uid not in returned]
    different = [uid for uid in expected if uid in returned and returned[uid] != expected[uid]["digest"]]
    retrieved = read_rows(run_dir / RETRIEVED_FILE)
    retrieved_different = [
        r["sop_instance_uid"]
        for r in retrieved
        if r["sop_instance_uid"] in expected and r["digest"] != expected[r["sop_instance_uid"]]["digest"]
    ]
    result = {
        "ok": not (missing or different or retrieved_different or failed_requests),
        "target": str(peer),
        "instances": len(expected),
        "studies": len(by_study),
        "returned": len(returned),
        "missing": len(missing),
        "different": len(different),
        "retrieved_checked": len(retrieved),
        "retrieved_different": len(retrieved_different),
        "failed_requests": failed_requests[:EXAMPLES_KEPT],
        "examples": {
            "missing": missing[:EXAMPLES_KEPT],
            "different": different[:EXAMPLES_KEPT],
            "retrieved_different": retrieved_different[:EXAMPLES_KEPT],
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    (run_dir / VERIFY_FILE).write_text(json.dumps(result, indent=2))
    record = read_run_json(run_dir)
    record["verify"] = result
    write_run_json(run_dir, record)
    return result


def summary_line(result: dict) -> str:
    if result["ok"]:
        return (
            f"verified {result['instances']} instances in {result['studies']} studies: all returned "
            f"byte-identical ({result['retrieved_checked']} workstation retrievals also matched)"
        )
    problems = [
        f"{result[k]} {label}"
        for k, label in (("missing", "lost"), ("different", "changed"), ("retrieved_different", "retrieved changed"))
        if result[k]
    ]
    problems += [f"{len(result['failed_requests'])} failed C-GET requests"] if result["failed_requests"] else []
    return f"verification FAILED for {result['instances']} acknowledged instances: {', '.join(problems)}"


def verify_run(run_dir: Path) -> dict:
    """`pacsbench verify RUN`: reach the run's archive again (a native one restarted on its kept data)."""
    try:
        record = read_run_json(run_dir)
    except (OSError, ValueError):
        raise UserError(f"{run_dir}: not a run folder (no readable run.json)") from None
    scenario = record.get("scenario", {})
    client = ClientSpec.model_validate(scenario.get("client", {}))
    target = record.get("target") or {}
    if target.get("kind") != "native":
        if not target.get("port"):
            raise UserError(f"{run_dir}: run.json names no target address to verify against")
        return verify_against(Peer(target["host"], int(target["port"]), target["ae_title"]), run_dir, client)
    if not (run_dir / "archive" / "storage").is_dir():
        raise UserError(
            f"{run_dir}: the native archive's images were removed after the run (keep_data = false); "
            "use `pacsbench run --verify`, or set keep_data = true in [target]"
        )
    spec = TargetSpec.model_validate({**scenario["target"], "keep_data": True, "port": 0})
    folder = run_dir / "verify"
    folder.mkdir(exist_ok=True)
    if not (folder / "archive").exists():
        os.symlink("../archive", folder / "archive")  # the native target serves <folder>/archive
    native = make_target(spec, client)
    try:
        native.start(folder)
        return verify_against(native.peer, run_dir, client)
    finally:
        native.stop()
