"""Benchmark: does the harness keep its speed with small instances? CT (0.5 MB) against DSA (~1-10 MB), same run.

    python -m bench.benchmarks.profiles_bench [--profiles dsa-unit,ct] [--instances 400] [--rounds 3] [--sink auto]

Two paths, each profile in turn, rounds alternated (A B, A B, ...) so drifting machine load hits both:

- pool        fresh copies from the study pool (new UIDs, the header re-encoded, pre-encoded chunks),
              handed to nothing: the pool's own cost per instance
- fast path   the locust users' C-STORE path (bench.load.calibrate.store_pool_copies): pool copies over
              one association into a null sink (DCMTK storescp --ignore, or bench.dicom.storage_scp)

The table gives medians of instances/s, MB/s and microseconds per instance; the last lines the ratio of
each profile to the first (the reference). Small instances cost more per byte (each has its own header,
command and response); what must hold is the cost per instance, so the instances/s ratio is the one to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from bench.load.calibrate import null_sink, store_pool_copies
from bench.studies.pool import StudyPool
from bench.studies.profile import StudyProfile, load_profile


def pool_rate(pool: StudyPool, instances: int) -> tuple[float, float]:
    """(instances/s, MB/s) of handing out `instances` fresh copies as chunks, nothing consuming them."""
    handed = sent = 0
    started = time.perf_counter()
    while handed < instances:
        for copy in pool.next_study():
            sent += sum(len(c) for c in copy.encoded_chunks())
            handed += 1
    seconds = time.perf_counter() - started
    return handed / seconds, sent / 1e6 / seconds


def fast_path_rate(pool: StudyPool, peer, instances: int) -> tuple[float, float]:
    result = store_pool_copies(pool, peer, instances)
    if result.failures:
        raise SystemExit(f"{result.failures} stores failed into the null sink")
    return result.instances / result.seconds, result.bytes / 1e6 / result.seconds


def prepare(name: str, scale: float | None) -> StudyPool:
    profile = load_profile(name)
    if scale is not None and isinstance(profile, StudyProfile):
        profile = profile.scaled(scale)
    return StudyPool.prepare(profile, 2, seed=1, progress=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.benchmarks.profiles_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profiles", default="dsa-unit,ct", help="comma-separated; the first is the reference")
    parser.add_argument("--instances", type=int, default=400, help="instances per measurement (default 400)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    parser.add_argument("--sink", choices=["auto", "dcmtk", "python"], default="auto")
    parser.add_argument(
        "--scale", type=float, default=0.2, help="modality profiles' scale for the pool (default 0.2: smaller pools)"
    )
    args = parser.parse_args(argv)
    names = args.profiles.split(",")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="pacsbench-profiles-") as tmp:
        os.environ["PACSBENCH_CACHE"] = tmp
        pools = {name: prepare(name, args.scale) for name in names}
        for name, pool in pools.items():
            d = pool.describe()
            print(f"  {name}: {d['instances']} instances in the pool, {d['bytes'] / d['instances'] / 1e6:.2f} MB each")
        figures: dict[tuple[str, str], list[tuple[float, float]]] = {}
        with null_sink(args.sink) as sink:
            print(f"null sink: {sink.kind}")
            for _ in range(args.rounds):
                for name, pool in pools.items():
                    figures.setdefault((name, "pool"), []).append(pool_rate(pool, args.instances))
                    figures.setdefault((name, "fast path"), []).append(fast_path_rate(pool, sink.peer, args.instances))
    medians = {
        key: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        for key, runs in figures.items()
    }
    print(f"{'profile':14s} {'path':10s} {'instances/s':>12s} {'MB/s':>9s} {'us/instance':>12s}")
    for (name, path), (rate, mb) in medians.items():
        print(f"{name:14s} {path:10s} {rate:12.0f} {mb:9.1f} {1e6 / rate:12.0f}")
    reference = names[0]
    for name in names[1:]:
        for path in ("pool", "fast path"):
            rate, mb = medians[name, path]
            ref_rate, ref_mb = medians[reference, path]
            print(f"{name} / {reference}, {path}: instances/s {rate / ref_rate:.2f}x, MB/s {mb / ref_mb:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
