"""Benchmark: the harness's C-STORE path against DCMTK's storescu, into the same null sink.

    python -m bench.benchmarks.client_store [--instances 100] [--rounds 5] [--sink dcmtk|python]

2 MB instances (bench/benchmarks/instance2mb.toml), one association, one process each.
Rounds alternate the senders (A B C D, A B C D, ...) so drifting machine load hits them
alike; the table gives medians and the last line the ratio of medians, harness / storescu
(>= 1.0x: the harness is no slower than DCMTK). Senders:

- storescu      DCMTK's /usr/bin/storescu, files from disk (timed from exec to exit)
- send          `pacsbench send`: the same files, read and streamed by the fast path
- pool          the locust users' path: fresh pool copies, pre-encoded chunks
- pool/gevent   the same inside a gevent-patched child process, as under locust
- pynetdicom    pynetdicom's send_c_store(Dataset), TCP_NODELAY set, for reference
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.dicom.peer import Peer
from bench.load.calibrate import (
    PROFILE_2MB,
    dcmtk_available,
    null_sink,
    store_pool_copies,
    storescu_result,
    write_files,
)
from bench.load.send import SendResult, scan_folder, send_files
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile
from server_under_test.upper_layer.status import is_done


def pynetdicom_result(paths: list[Path], peer: Peer) -> SendResult:
    from pydicom import dcmread
    from pynetdicom import AE

    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title="PACSBENCH-PYN")
    ae.maximum_pdu_size = 0
    ae.add_requested_context(str(datasets[0].SOPClassUID), str(datasets[0].file_meta.TransferSyntaxUID))
    started = time.perf_counter()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    result = SendResult()
    for ds in datasets:
        status = assoc.send_c_store(ds)
        ok = "Status" in status and is_done(status.Status)
        result.instances += ok
        result.failures += not ok
        result.frames += int(ds.get("NumberOfFrames", 1)) if ok else 0
    assoc.release()
    result.seconds = time.perf_counter() - started
    result.bytes = sum(p.stat().st_size for p in paths[: result.instances])
    return result


def gevent_child(peer: Peer, instances: int) -> SendResult:
    """The pool path in a child process with gevent's monkey patching (as under locust)."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import json, sys\n"
        "from bench.load.calibrate import PROFILE_2MB, store_pool_copies\n"
        "from bench.dicom.peer import Peer\n"
        "from bench.studies.pool import StudyPool\n"
        "from bench.studies.profile import load_profile\n"
        "pool = StudyPool.prepare(load_profile(str(PROFILE_2MB)), 2, 1, progress=False)\n"
        f"peer = Peer({peer.host!r}, {peer.port}, {peer.ae_title!r})\n"
        f"store_pool_copies(pool, peer, 20)\n"
        f"r = store_pool_copies(pool, peer, {instances})\n"
        "print(json.dumps([r.instances, r.frames, r.bytes, r.failures, r.seconds]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    instances_done, frames, size, failures, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    return SendResult(instances_done, frames, size, failures, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.benchmarks.client_store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--instances", type=int, default=100, help="instances per measurement (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of all senders (default 5)")
    parser.add_argument("--sink", choices=["auto", "dcmtk", "python"], default="auto")
    parser.add_argument("--no-pynetdicom", action="store_true", help="skip the (slow) pynetdicom reference")
    args = parser.parse_args(argv)
    if not dcmtk_available():
        print("DCMTK not installed (apt-get install dcmtk): nothing to compare with", file=sys.stderr)
        return 2
    pool = StudyPool.prepare(load_profile(str(PROFILE_2MB)), 2, 1, progress=False)
    folder = Path(tempfile.mkdtemp(prefix="pacsbench-client-store-"))
    try:
        paths = write_files(pool, args.instances, folder)
        files = scan_folder(folder)
        with null_sink(args.sink) as sink:
            senders = {
                "storescu": lambda: storescu_result(paths, sink.peer),
                "send": lambda: send_files(files, sink.peer),
                "pool": lambda: store_pool_copies(pool, sink.peer, args.instances),
                "pool/gevent": lambda: gevent_child(sink.peer, args.instances),
            }
            if not args.no_pynetdicom:
                senders["pynetdicom"] = lambda: pynetdicom_result(paths, sink.peer)
            store_pool_copies(pool, sink.peer, 20)  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in senders}
            mbs: dict[str, list[float]] = {name: [] for name in senders}
            for _ in range(args.rounds):
                for name, sender in senders.items():
                    result = sender()
                    if result.failures:
                        print(f"{name}: {result.failures} failures", file=sys.stderr)
                        return 1
                    rates[name].append(result.rates()["instances_per_s"])
                    mbs[name].append(result.rates()["mb_per_s"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    size_mb = sum(f.length for f in files) / len(files) / 1e6
    print(
        f"{args.instances} x {size_mb:.2f} MB instances, one association, one process, into {sink.kind}; "
        f"{args.rounds} rounds, medians (min-max)"
    )
    print(f"{'sender':<12} {'instances/s':>22} {'MB/s':>22}")
    for name in senders:
        r, m = rates[name], mbs[name]
        print(
            f"{name:<12} {statistics.median(r):>8.1f} ({min(r):6.1f}-{max(r):6.1f}) "
            f"{statistics.median(m):>8.1f} ({min(m):6.1f}-{max(m):6.1f})"
        )
    reference = statistics.median(rates["storescu"])
    print(
        "harness / storescu (instances/s, medians): "
        + ", ".join(
            f"{name} {statistics.median(rates[name]) / reference:.2f}x" for name in senders if name != "storescu"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
