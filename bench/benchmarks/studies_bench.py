"""How fast are synthetic studies made and handed out? Run: python -m bench.benchmarks.studies_bench

Prints, in one run:
  1. fresh synthesis of 1024x1024 12-bit runs (pixels, and pixels + XA instance), frames/s;
  2. encoding speed per transfer syntax on such a run, frames/s, and its lossless ratio;
  3. the lossless ratio of every shipped profile in every syntax (one short run each);
  4. the study pool's output (whole studies as encoded chunks, new UIDs each), MB/s per core,
     into /dev/null and through a local socket drained by a child process.
Goals from issue 3: >= 30 frames/s fresh, >= 200 MB/s from the pool. Figures on a shared
machine are noisy: run it twice and read the machine load line.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common.errors import UserError
from bench.studies.encode import LOSSLESS, SYNTAXES, attach_pixel_data, encode_pixel_data, require_encoder
from bench.studies.generate import plan_study
from bench.studies.pixels import RunShape, synthesize_run
from bench.studies.pool import StudyPool
from bench.studies.profile import Profile, available_profiles, load_profile
from bench.studies.xa import build_header


def _runs_of(profile_name: str, count: int, frames: int, seed: int = 1):
    """(shape, plan, run) for `count` runs of a profile, each cut or stretched to `frames` frames."""
    profile = load_profile(profile_name)
    for index in range(count):
        plan = plan_study(profile, seed, index)
        run = plan.runs[0]
        yield profile, plan, run, replace(run.shape, frames=frames)


def fresh_synthesis(runs: int, frames: int) -> None:
    synthesize_run(RunShape(64, 64, 3, 12), 0)  # warm up the noise table
    pixel_rates, instance_rates = [], []
    for profile, plan, run, shape in _runs_of("max150", runs, frames):
        t0 = time.perf_counter()
        pixels = synthesize_run(shape, run.pixel_seed)
        t1 = time.perf_counter()
        ds = build_header(shape, plan.keys, run.keys, profile.frame_rate, profile.body_part)
        attach_pixel_data(ds, encode_pixel_data(pixels, ds, SYNTAXES["explicit"]), SYNTAXES["explicit"])
        t2 = time.perf_counter()
        pixel_rates.append(frames / (t1 - t0))
        instance_rates.append(frames / (t2 - t0))
    print(f"fresh synthesis, 1024x1024 12-bit LOG, {runs} runs of {frames} frames (goal >= 30 frames/s):")
    print(
        f"  pixels only            median {statistics.median(pixel_rates):6.1f} frames/s "
        f"(runs: {', '.join(f'{r:.1f}' for r in pixel_rates)})"
    )
    print(f"  pixels + XA instance   median {statistics.median(instance_rates):6.1f} frames/s")


def encoding_speed(frames: int) -> None:
    print(f"encoding one 1024x1024 12-bit run of {frames} frames (max150 profile):")
    profile, plan, run, shape = next(_runs_of("max150", 1, frames))
    pixels = synthesize_run(shape, run.pixel_seed)
    header = build_header(shape, plan.keys, run.keys, profile.frame_rate, profile.body_part)
    for syntax in (SYNTAXES[name] for name in LOSSLESS):
        try:
            require_encoder(syntax)
        except UserError as exc:
            print(f"  {syntax.name:9s} skipped: {exc}")
            continue
        t0 = time.perf_counter()
        value = encode_pixel_data(pixels, header, syntax)
        seconds = time.perf_counter() - t0
        print(f"  {syntax.name:9s} {frames / seconds:7.1f} frames/s   ratio {pixels.nbytes / len(value):.2f}:1")


def ratio_table(frames: int) -> None:
    print(f"lossless ratio per profile and syntax (first run of study 0, seed 1, {frames} frames):")
    names = [name for name in LOSSLESS if SYNTAXES[name].encapsulated]
    print(f"  {'profile':10s}" + "".join(f"{n:>10s}" for n in names))
    for profile_name in available_profiles(Profile):
        profile, plan, run, shape = next(_runs_of(profile_name, 1, frames))
        pixels = synthesize_run(shape, run.pixel_seed)
        header = build_header(shape, plan.keys, run.keys, profile.frame_rate, profile.body_part)
        cells = []
        for name in names:
            try:
                cells.append(f"{pixels.nbytes / len(encode_pixel_data(pixels, header, SYNTAXES[name])):10.2f}")
            except UserError:
                cells.append(f"{'n/a':>10s}")
        print(f"  {profile_name:10s}" + "".join(cells))


def _drain_child(receiver: socket.socket, sender: socket.socket) -> int:
    """Fork a process that reads and discards everything from `receiver` (a stand-in archive)."""
    pid = os.fork()
    if pid == 0:
        sender.close()
        buffer = bytearray(1 << 20)
        while receiver.recv_into(buffer):
            pass
        os._exit(0)
    receiver.close()
    return pid


def _send_for(pool: StudyPool, seconds: float, send) -> tuple[int, int, int, float, float]:
    """Hand out whole studies for `seconds`; pass every instance's chunks to `send`."""
    studies = instances = sent = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for instance in pool.next_study():
            sent += send(instance.encoded_chunks())
            instances += 1
        studies += 1
    return studies, instances, sent, time.perf_counter() - wall0, time.process_time() - cpu0


def _send_all(sock: socket.socket, chunks) -> int:
    for chunk in chunks:
        sock.sendall(chunk)
    return sum(len(c) for c in chunks)


def pool_output(profile_name: str, syntax_name: str, pool_size: int, seconds: float) -> None:
    """Two consumers: /dev/null (the pool's own cost) and a local socket a child drains
    (the kernel copies every byte once, as a C-STORE to a local archive must)."""
    pool = StudyPool.prepare(load_profile(profile_name), pool_size, seed=1, progress=False, transfer_syntax=syntax_name)
    with open(os.devnull, "wb", buffering=0) as sink:
        results = {"/dev/null": _send_for(pool, seconds, lambda chunks: os.writev(sink.fileno(), chunks))}
    sender, receiver = socket.socketpair()
    child = _drain_child(receiver, sender)
    try:
        results["socket"] = _send_for(pool, seconds, lambda chunks: _send_all(sender, chunks))
    finally:
        sender.close()
        os.waitpid(child, 0)
    for consumer, (studies, instances, sent, wall, cpu) in results.items():
        print(
            f"  {profile_name:8s} {syntax_name:8s} -> {consumer:9s} {studies:5d} studies {instances:6d} instances "
            f"in {wall:.1f} s: {sent / 1e6 / wall:7.0f} MB/s, {sent / 1e6 / cpu:7.0f} MB per CPU-second "
            f"of the sender, {instances / wall:5.0f} instances/s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.benchmarks.studies_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh runs to time (default 5)")
    parser.add_argument("--frames", type=int, default=16, help="frames per fresh run (default 16)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per pool measurement (default 3)")
    parser.add_argument("--cache", type=Path, default=None, help="pool cache folder (default: a temporary one)")
    args = parser.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(shared: figures are noisy)"
    )
    fresh_synthesis(args.runs, args.frames)
    encoding_speed(8)
    ratio_table(8)
    with tempfile.TemporaryDirectory(prefix="pacsbench-bench-") as tmp:
        os.environ["PACSBENCH_CACHE"] = str(args.cache or tmp)
        print("pool output: whole studies, new UIDs each, as encoded chunks (goal >= 200 MB/s per core):")
        pool_output("dsa-unit", "explicit", 2, args.seconds)
        pool_output("dsa-unit", "jpeg-ls", 2, args.seconds)
        pool_output("tiny", "explicit", 2, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
