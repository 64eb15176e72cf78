"""The `calibrate` stage: how fast is the harness alone? Its ceiling goes into every run.

The harness stores pool instances (the locust users' fast path, under gevent as in a
run) into a null sink: DCMTK's `storescp --ignore` when installed (C, receives and
discards), else the harness's own Storage SCP in null-sink mode in a separate process.
DCMTK's storescu is timed into the same sink for scale. The ceiling is kept in the cache
folder per profile and transfer syntax; a run records the one for its pool (or, from
another profile, the MB/s ceiling converted to instances/s with the pool's mean size),
times its number of load processes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common.errors import UserError
from bench.common.paths import cache_root
from bench.common.processes import free_local_port, stop_process
from bench.dicom.peer import Peer
from bench.dicom.readiness import NoEchoAnswer, wait_for_echo
from bench.dicom.scu import ServiceUser, storage_proposals
from bench.load.send import SendResult
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from server_under_test.upper_layer.status import is_done

CALIBRATION_FILE = "calibration.json"
PROFILE_2MB = Path(__file__).parents[1] / "benchmarks" / "instance2mb.toml"
STORESCP, STORESCU = "/usr/bin/storescp", "/usr/bin/storescu"  # full paths: pynetdicom's scripts shadow them in a venv
SINK_AE = "NULLSINK"
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


# -- the stored ceiling --------------------------------------------------------------------
def _entry_key(profile: str, syntax: str) -> str:
    return f"{profile}/{syntax}"


def _calibration_path() -> Path:
    return cache_root() / CALIBRATION_FILE


def load_calibrations() -> dict:
    try:
        return json.loads(_calibration_path().read_text())
    except (OSError, ValueError):
        return {"entries": {}}


def save_calibration(entry: dict) -> Path:
    data = load_calibrations()
    key = _entry_key(entry["profile"], entry["transfer_syntax"])
    data.setdefault("entries", {})[key] = entry
    data["latest"] = key
    path = _calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data, indent=2))
    temp.replace(path)
    return path


def ceiling_for_run(profile: str, syntax: str, mean_instance_bytes: float, processes: int) -> dict | None:
    """run.json["calibration"] for a run of this pool with `processes` load processes, or None."""
    data = load_calibrations()
    entries = data.get("entries", {})
    entry = entries.get(_entry_key(profile, syntax)) or entries.get(data.get("latest", ""))
    if not entry:
        return None
    same_pool = entry["profile"] == profile and entry["transfer_syntax"] == syntax
    per_process_instances = (
        entry["instances_per_s"] if same_pool else entry["mb_per_s"] * 1e6 / max(mean_instance_bytes, 1.0)
    )
    return {
        "ceiling_instances_per_s": round(per_process_instances * processes, 2),
        "ceiling_mb_per_s": round(entry["mb_per_s"] * processes, 2),
        "processes": processes,
        "measured": entry,
        "derivation": (
            "measured with this profile and transfer syntax"
            if same_pool
            else f"MB/s measured with {entry['profile']} ({entry['transfer_syntax']}), converted with this "
            "pool's mean instance size"
        )
        + f"; one load process's ceiling x {processes}",
    }


def calibrate(
    profile_name: str | None,
    syntax: str | None,
    instances: int,
    sink_kind: str,
    with_storescu: bool = True,
    progress: bool = True,
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
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": os.uname().nodename,
    }
    entry["path"] = str(save_calibration(entry))
    return entry
