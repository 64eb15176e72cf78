"""The `calibrate` stage: how fast is the harness alone? Its ceiling goes into every run.

The harness stores pool instances (the locust users' fast path, under gevent as in a
run) into a null sink: DCMTK's `storescp --ignore` when installed (C, receives and
discards), else the harness's own Storage SCP in null-sink mode in a separate process.
DCMTK's storescu is timed into the same sink for scale. Retrieval is calibrated the same
way from the other side: a null source (bench.load.retrieval_source, its own process)
answers the workstations' C-GET and C-MOVE (into the harness's Storage SCP) with pool copies. The
DICOMweb users' STOW-RS and WADO-RS are calibrated against a null DICOMweb peer (bench.load.web_calibrate).

Each ceiling is kept in the state folder (bench.common.paths.state_root) with a fingerprint of
what moves it: the host (CPU model, cores, RAM, kernel, hypervisor layers), the profile, the
transfer syntax, the harness version, one load process. A run uses only a calibration whose fingerprint matches its own
(one process's ceiling times its load processes, while each has a core); otherwise run.json
says which facts differ, and no CLIENT-BOUND verdict comes from a wrong ceiling.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.common.errors import UserError
from bench.common.paths import state_root
from bench.common.processes import free_local_port, stop_process
from bench.dicom.peer import Peer
from bench.dicom.readiness import NoEchoAnswer, wait_for_echo
from bench.dicom.scu import UNCOMPRESSED, ServiceUser, query_proposals, storage_proposals, study_identifier
from bench.dicom.storage_scp import StorageSCP
from bench.load.send import SendResult
from bench.load.web_calibrate import calibrate_dicomweb
from bench.results.run_record import CalibrationRecord
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from server_under_test import environment
from server_under_test.upper_layer.status import is_done

CALIBRATION_FILE = "calibration.json"
PROFILE_2MB = Path(__file__).parents[1] / "benchmarks" / "instance2mb.toml"
STORESCP, STORESCU = "/usr/bin/storescp", "/usr/bin/storescu"  # full paths: pynetdicom's scripts shadow them in a venv
SINK_AE = "NULLSINK"
RETRIEVE_METHODS = ("get", "move")  # what workstation users do (bench.load.users)
DICOMWEB_REQUESTS = ("stow", "wado")  # what the stow and wado users do (bench.load.web_users)
SINK_START_TIMEOUT = 15.0
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK reads it; without it every store waits ~40 ms (Nagle)


@dataclass
class NullSink:
    kind: str
    peer: Peer
    process: subprocess.Popen


def dcmtk_available() -> bool:
    return Path(STORESCP).is_file() and Path(STORESCU).is_file()


@contextmanager
def null_sink(kind: str = "auto"):
    """A running null sink: 'dcmtk' (storescp --ignore), 'python' (bench.dicom.storage_scp) or 'auto'."""
    if kind == "auto":
        kind = "dcmtk" if dcmtk_available() else "python"
    if kind == "dcmtk" and not dcmtk_available():
        raise UserError(f"{STORESCP} not found (apt-get install dcmtk), or use --sink python")
    port = free_local_port()
    if kind == "dcmtk":
        command = [STORESCP, "--ignore", "--aetitle", SINK_AE, str(port)]
        label = "DCMTK storescp --ignore"
    else:
        command = [sys.executable, "-m", "bench.dicom.storage_scp", "--port", str(port), "--aet", SINK_AE]
        label = "bench.dicom.storage_scp (null sink)"
    process = subprocess.Popen(command, env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peer = Peer("127.0.0.1", port, SINK_AE)
    try:
        try:
            wait_for_echo(peer, "PACSBENCH-CAL", SINK_START_TIMEOUT, alive=lambda: process.poll() is None)
        except NoEchoAnswer:
            raise UserError(f"the null sink did not answer C-ECHO on {peer} within {SINK_START_TIMEOUT:g} s") from None
        yield NullSink(label, peer, process)
    finally:
        stop_process(process, 10.0)


def store_pool_copies(pool: StudyPool, peer: Peer, instances: int, timeout: float = 30.0) -> SendResult:
    """The locust users' C-STORE path, one association: `instances` fresh copies from the pool."""
    copies = []
    while len(copies) < instances:
        copies += pool.next_study()
    copies = copies[:instances]
    user = ServiceUser(
        peer, "PACSBENCH-CAL", storage_proposals(pool.sop_classes, pool.transfer_syntaxes), timeout=timeout
    )
    result = SendResult()
    started = time.perf_counter()
    user.connect()
    for copy in copies:
        status = user.store(copy.sop_class_uid, copy.sop_instance_uid, copy.transfer_syntax_uid, copy.encoded_chunks())
        if is_done(status):
            result.instances += 1
            result.frames += copy.frames
            result.bytes += copy.size
        else:
            result.failures += 1
    user.release()
    result.seconds = time.perf_counter() - started
    return result


def write_files(pool: StudyPool, instances: int, folder: Path) -> list[Path]:
    """Fresh pool copies as Part 10 files (for storescu)."""
    paths = []
    while len(paths) < instances:
        for copy in pool.next_study()[: instances - len(paths)]:
            path = folder / f"{copy.sop_instance_uid}.dcm"
            copy.dataset.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def storescu_result(paths: list[Path], peer: Peer) -> SendResult:
    """DCMTK storescu sending `paths` over one association; seconds from process start to exit."""
    started = time.perf_counter()
    done = subprocess.run(
        [STORESCU, "--aetitle", "PACSBENCH-CAL", "--call", peer.ae_title, peer.host, str(peer.port), *map(str, paths)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    failed = len(re.findall(r"Store Failed", done.stderr + done.stdout)) or (len(paths) if done.returncode else 0)
    sizes = sum(p.stat().st_size for p in paths)
    return SendResult(instances=len(paths) - failed, bytes=sizes, failures=failed, seconds=seconds)


# -- retrieval: the harness receiving from a null source ----------------------------------
@contextmanager
def retrieval_source(profile: str, syntax: str | None, destination: tuple[str, int]):
    """A running bench.load.retrieval_source (its own process) answering C-GET and C-MOVE with pool copies."""
    port = free_local_port()
    command = [
        sys.executable,
        "-m",
        "bench.load.retrieval_source",
        "--port",
        str(port),
        "--profile",
        profile,
        "--destination",
        f"{destination[0]}:{destination[1]}",
    ]
    command += ["--transfer-syntax", syntax] if syntax else []
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peer = Peer("127.0.0.1", port, "NULLSOURCE")
    try:
        try:
            wait_for_echo(peer, "PACSBENCH-CAL", SINK_START_TIMEOUT * 4, alive=lambda: process.poll() is None)
        except NoEchoAnswer:
            raise UserError(f"the retrieval null source did not answer C-ECHO on {peer}") from None
        yield peer
    finally:
        stop_process(process, 10.0)


def retrieve_studies(
    pool: StudyPool, source: Peer, scp: StorageSCP, method: str, instances: int, timeout: float = 30.0
) -> SendResult:
    """The workstations' C-GET or C-MOVE path, one association, until `instances` have arrived."""
    syntaxes = list(dict.fromkeys(pool.transfer_syntaxes + UNCOMPRESSED))
    proposals = query_proposals() + (
        storage_proposals(pool.sop_classes, syntaxes, scp_role=True) if method == "get" else []
    )
    user = ServiceUser(source, "PACSBENCH-CAL", proposals, timeout=timeout)
    result = SendResult()
    started = time.perf_counter()
    user.connect()
    while result.instances + result.failures < instances:
        study = study_identifier(f"1.2.826.0.1.3680043.10.1.{result.instances}")  # the source sends any study
        if method == "get":
            outcome = user.get(study)
        else:
            message_id, outcome = user.move(study, scp.ae_title)
            outcome.gathered = scp.collect(message_id, "")
        if not is_done(outcome.status) or outcome.mismatch():
            result.failures += max(outcome.completed + outcome.failed, 1)
            continue
        result.instances += outcome.instances
        result.frames += outcome.frames
        result.bytes += outcome.bytes
    user.release()
    result.seconds = time.perf_counter() - started
    return result


def calibrate_retrieval(profile: str, syntax: str | None, pool: StudyPool, instances: int) -> dict:
    """Instances/s and MB/s the harness receives by C-GET and by C-MOVE (into its Storage SCP, as in a run)."""
    scp = StorageSCP("PACSBENCH-SCP", "127.0.0.1", 0).start()
    measured = {}
    try:
        with retrieval_source(profile, syntax, (scp.host, scp.port)) as source:
            for method in RETRIEVE_METHODS:
                retrieve_studies(pool, source, scp, method, min(instances, 20))  # warm-up
                result = retrieve_studies(pool, source, scp, method, instances)
                if result.failures:
                    raise UserError(
                        f"calibration: {result.failures} C-{method.upper()} sub-operations from the null source failed"
                    )
                measured[method] = result.rates()
    finally:
        scp.stop()
    return measured


# -- the fingerprint: what moves the ceiling ------------------------------------------------
def host_fingerprint() -> dict:
    """The host facts a ceiling depends on, through the project's one host detection."""
    model, _ = environment.cpu_model_and_flag()
    layers = environment.detect_hypervisor()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_bytes": environment.memory_bytes(),
        "kernel": platform.release(),
        "hypervisor": layers["hypervisor"],
        "container": layers["container"],
    }


def harness_version() -> str | None:
    try:
        return metadata.version("pacsbench")
    except metadata.PackageNotFoundError:
        return None


def fingerprint(profile: str, syntax: str) -> dict:
    """The fingerprint of a calibration made here (one load process), or of a run here with this pool."""
    return {
        "host": host_fingerprint(),
        "profile": profile,
        "transfer_syntax": syntax,
        "harness_version": harness_version(),
        "load_processes": 1,
    }


def fingerprint_digest(print_: dict) -> str:
    return hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:12]


def fingerprint_differences(calibrated: dict, run: dict, processes: int) -> list[str]:
    """What differs between a calibration's fingerprint and a run's ("" when they match).

    One process's ceiling stands for `processes` only while each has a core of its own."""
    host_a, host_b = calibrated.get("host", {}), run.get("host", {})
    differ = [
        f"host {key} {host_a.get(key)!r} vs {host_b.get(key)!r}"
        for key in sorted(host_b)
        if host_a.get(key) != host_b.get(key)
    ]
    differ += [
        f"{key} {calibrated.get(key)!r} vs {run.get(key)!r}"
        for key in ("profile", "transfer_syntax", "harness_version")
        if calibrated.get(key) != run.get(key)
    ]
    cores = host_b.get("cpus") or 1
    if processes > cores:
        differ.append(f"{processes} load processes on {cores} cores (calibrated: one process on a core of its own)")
    return differ


# -- the stored ceiling --------------------------------------------------------------------
def _entry_key(print_: dict) -> str:
    return f"{print_['profile']}/{print_['transfer_syntax']}/{fingerprint_digest(print_)}"


def _calibration_path() -> Path:
    return state_root() / CALIBRATION_FILE


def load_calibrations() -> dict:
    try:
        return json.loads(_calibration_path().read_text())
    except (OSError, ValueError):
        return {"entries": {}}


def save_calibration(entry: dict) -> Path:
    data = load_calibrations()
    key = _entry_key(entry["fingerprint"])
    data.setdefault("entries", {})[key] = entry
    data["latest"] = key
    path = _calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=2))
    temp.replace(path)
    return path


def _closest(entries: list[dict], run_print: dict, processes: int) -> tuple[dict | None, list[str]]:
    """The entry with the fewest differences from the run's fingerprint, and those differences."""
    scored = [(fingerprint_differences(e.get("fingerprint") or {}, run_print, processes), e) for e in entries]
    if not scored:
        return None, []
    differences, entry = min(scored, key=lambda pair: len(pair[0]))
    return entry, differences


def ceiling_for_run(profile: str, syntax: str, processes: int) -> CalibrationRecord | None:
    """run.json["calibration"]: the ceilings of the calibration whose fingerprint matches this run's
    (x `processes`), or why none does; None when the state holds no calibration at all."""
    run_print = fingerprint(profile, syntax)
    entries = list(load_calibrations().get("entries", {}).values())
    if not entries:
        return None
    how = f"`pacsbench calibrate --profile {profile}` measures one"
    printed = [e for e in entries if e.get("fingerprint")]
    if not printed:  # made by a pacsbench before fingerprints: what it measured is unknown
        return CalibrationRecord(
            matched=False,
            fingerprint=run_print,
            closest=None,
            note=f"no matching calibration (the cached ones have no fingerprint; {how})",
        )
    entry, differences = _closest(printed, run_print, processes)
    if differences:
        return CalibrationRecord(
            matched=False,
            fingerprint=run_print,
            closest=entry.get("fingerprint"),
            note=f"no matching calibration (host/profile/syntax differ: {'; '.join(differences)}; {how})",
        )
    retrieval = {
        f"retrieve_{method}_ceiling_{unit}": round(rates[unit] * processes, 2)
        for method, rates in (entry.get("retrieve") or {}).items()
        for unit in ("instances_per_s", "mb_per_s")
    }
    dicomweb = entry.get("dicomweb") or {}
    retrieval |= {
        f"{request}_ceiling_{unit}": round(dicomweb[request][unit] * processes, 2)
        for request in DICOMWEB_REQUESTS
        if request in dicomweb
        for unit in ("instances_per_s", "mb_per_s")
    }
    return CalibrationRecord(
        matched=True,
        fingerprint=run_print,
        ceiling_instances_per_s=round(entry["instances_per_s"] * processes, 2),
        ceiling_mb_per_s=round(entry["mb_per_s"] * processes, 2),
        processes=processes,
        measured=entry,
        derivation=f"measured here with this profile and transfer syntax; one load process's ceiling x {processes}",
        **retrieval,
    )


def calibrate(
    profile_name: str | None,
    syntax: str | None,
    instances: int,
    sink_kind: str,
    with_storescu: bool = True,
    progress: bool = True,
    with_retrieval: bool = True,
    with_dicomweb: bool = True,
) -> dict:
    """Measure the harness (and storescu) into a null sink; store and return the entry."""
    profile = load_profile(profile_name or str(PROFILE_2MB))
    pool = StudyPool.prepare(profile, 2, 1, progress=progress, transfer_syntax=syntax)
    syntax_name = syntax or profile.transfer_syntax
    with null_sink(sink_kind) as sink:
        store_pool_copies(pool, sink.peer, min(instances, 20))  # warm-up: caches, pixel digests, TCP buffers
        harness = store_pool_copies(pool, sink.peer, instances)
        storescu = None
        if with_storescu and dcmtk_available():
            folder = Path(tempfile.mkdtemp(prefix="pacsbench-calibrate-"))
            try:
                storescu = storescu_result(write_files(pool, instances, folder), sink.peer)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    if harness.failures:
        raise UserError(f"calibration: {harness.failures} of {instances} stores into the null sink failed")
    rates = harness.rates()
    entry = {
        "profile": profile.name,
        "transfer_syntax": syntax_name,
        "instances_per_s": rates["instances_per_s"],
        "mb_per_s": rates["mb_per_s"],
        "mean_instance_bytes": round(harness.bytes / max(harness.instances, 1)),
        "instances": harness.instances,
        "seconds": rates["seconds"],
        "sink": sink.kind,
        "storescu": storescu.rates() if storescu else None,
        "retrieve": calibrate_retrieval(profile_name or str(PROFILE_2MB), syntax, pool, instances)
        if with_retrieval
        else None,
        "dicomweb": calibrate_dicomweb(profile_name or str(PROFILE_2MB), syntax, pool, instances)
        if with_dicomweb
        else None,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": os.uname().nodename,
        "fingerprint": fingerprint(profile.name, syntax_name),
    }
    entry["path"] = str(save_calibration(entry))
    return entry
