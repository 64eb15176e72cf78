"""The `pacsbench` command line: generate, serve, run, send, calibrate, verify, worker, report, compare, gate, baseline.

Heavy modules are imported inside each command: `run` must import locust (gevent
monkey-patching) before anything else opens a socket or starts a thread.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench import __version__
from bench.common.errors import UserError
from bench.common.open_files import raise_open_files_limit

EPILOG_RUN = """examples:
  pacsbench run scenarios/smoke.toml           # tiny studies into the reference archive, 5 s
  pacsbench run scenarios/demo.toml --results /tmp/results
The last line printed is the run folder; pass it to `pacsbench report`."""


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="write synthetic DSA (XA multi-frame) studies to a folder",
        description="Synthesize DSA studies: one XA multi-frame instance per run (series), several runs per "
        "study, several studies per patient. Deterministic for a seed; each study gets its own UIDs. "
        "Profiles: bench/studies/profiles/*.toml or a path to your own .toml.",
    )
    p.add_argument("--profile", default="dsa-unit", help="profile name or .toml path (default dsa-unit, ~30 MB studies)")
    p.add_argument("--studies", type=int, default=1, help="number of studies (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same files (default 1)")
    p.add_argument("--transfer-syntax", default=None, metavar="NAME",
                   help="explicit, rle, jpeg-ls, j2k or jpeg-sv1 (default: the profile's, usually explicit)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/studies-PROFILE-seedS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_generate)


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="run the reference archive (DICOM C-ECHO/C-STORE SCP with a SQLite index) in the foreground",
        description="Run the reference archive until SIGTERM or Ctrl-C. Options are those of "
        "`python -m server_under_test`; see `pacsbench serve --help`.",
        add_help=False,
    )
    p.set_defaults(func=cmd_serve)


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a scenario: start the target, send load with locust, write a run folder",
        description="Run a benchmark scenario (TOML): prepare the study pool (cached), start the load processes, "
        "start or reach the target, prefill it, run the scenario's locust users (modalities, reading workstations, "
        "query, echo) for its duration or shape, and write results/<run-id>/ with run.json, samples.csv, sent.csv "
        "and locust's CSV statistics.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, help="scenario file, e.g. scenarios/smoke.toml")
    p.add_argument("--results", type=Path, default=Path("results"), help="where run folders go (default ./results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, nargs="?", const=os.cpu_count() or 1, default=0, metavar="N",
                   help="run locust as master + N local worker processes (--workers alone, after the scenario: "
                   "one per core; default 0: users run in this process)")
    p.add_argument("--remote-workers", type=int, default=0, metavar="M",
                   help="also wait for M workers joining from other machines (pacsbench worker --master HOST)")
    p.add_argument("--master-bind", default=None, metavar="HOST",
                   help="address the master listens on for workers (default 127.0.0.1; 0.0.0.0 with --remote-workers)")
    p.add_argument("--master-port", type=int, default=None, metavar="PORT",
                   help="port the master listens on (default: any free port; 5557 with --remote-workers)")
    p.add_argument("--workers-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long workers may take to join and load the study pool (default 120)")
    p.add_argument("--verify", action="store_true",
                   help="after the load, retrieve every acknowledged instance and compare it with what was sent")
    p.set_defaults(func=cmd_run)


EPILOG_SEND = """examples:
  pacsbench send results/studies-dsa-unit-seed1 --host 127.0.0.1 --port 11112 --aet PACSBENCH
  pacsbench send /data/xa --host pacs.example.org --port 104 --aet ARCHIVE --associations 4 --json
The last line printed holds instances/s, frames/s, MB/s and failures; exit status 1 on any failure."""


def _add_send(sub) -> None:
    p = sub.add_parser(
        "send",
        help="send every DICOM file under a folder with the harness's fast C-STORE path",
        description="C-STORE every DICOM Part 10 file under DIR (recursively) to an archive over N associations, "
        "datasets streamed as they are stored in the files. Seconds run from the first association request to "
        "the last release.",
        epilog=EPILOG_SEND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder holding the DICOM files")
    p.add_argument("--host", required=True, help="archive host")
    p.add_argument("--port", type=int, required=True, help="archive DICOM port")
    p.add_argument("--aet", required=True, help="archive AE title (called AE)")
    p.add_argument("--calling-aet", default="PACSBENCH-SCU", help="our AE title (default PACSBENCH-SCU)")
    p.add_argument("--associations", type=int, default=1, metavar="N", help="parallel associations (default 1)")
    p.add_argument("--max-pdu", type=int, default=0, help="largest PDU we receive (default 0: unlimited)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for association set-up and each response")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary line")
    p.set_defaults(func=cmd_send)


def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure the harness alone against a null sink; runs record this ceiling",
        description="Store fresh copies of pool instances (the locust users' C-STORE path, under gevent) over one "
        "association into a null sink (DCMTK storescp --ignore when installed, else the harness's own SCP in "
        "another process), time DCMTK storescu into the same sink, and keep the ceiling in the cache folder. "
        "Runs record it in run.json['calibration']; reports flag figures above 80%% of it as client-bound.",
    )
    p.add_argument("--profile", default=None, help="study profile (default: 2 MB instances, "
                   "bench/benchmarks/instance2mb.toml); calibrate with your scenario's profile for exact ceilings")
    p.add_argument("--transfer-syntax", default=None, metavar="NAME", help="default: the profile's")
    p.add_argument("--instances", type=int, default=200, help="instances stored per measurement (default 200)")
    p.add_argument("--sink", choices=["auto", "dcmtk", "python"], default="auto",
                   help="null sink: DCMTK storescp --ignore, the harness's SCP, or auto (DCMTK when installed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_calibrate)


def _add_verify(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="retrieve every instance a run's archive acknowledged and compare it with what was sent",
        description="C-GET every study listed in the run's sent.csv and compare each instance's dataset digest with "
        "the one sent (and with what workstations retrieved, when they hashed it). A native archive is restarted on "
        "the run's kept data (keep_data = true). Writes verify.json and run.json['verify']; exit 1 on any loss or "
        "difference.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder")
    p.set_defaults(func=cmd_verify)


def _add_worker(sub) -> None:
    p = sub.add_parser(
        "worker",
        help="join a run's load from this machine as a locust worker",
        description="Connect to a `pacsbench run --remote-workers M` master, receive the scenario, load the study "
        "pool (synthesized here if this machine's cache lacks it), and run the users the master assigns. The "
        "samples travel to the master's run folder.",
    )
    p.add_argument("--master", required=True, metavar="HOST", help="the master's address")
    p.add_argument("--master-port", type=int, default=5557, help="the master's port (default 5557)")
    p.add_argument("--join-timeout", type=float, default=60.0, help="seconds to wait for the master (default 60)")
    p.set_defaults(func=cmd_worker)


def _add_settings(p) -> None:
    p.add_argument("--warmup", default="10%", help="leading part of each run not measured: a share such as 10%% "
                   "(of first request to last response) or seconds such as 5s (default 10%%)")
    p.add_argument("--window", type=float, default=1.0, metavar="SECONDS",
                   help="time window for timelines and the bootstrap's resampling unit (default 1 s)")


def _add_claims(p) -> None:
    p.add_argument("--claims", type=Path, action="append", metavar="TOML",
                   help="published claims to check (repeatable; default: bench/analysis/claims/*.toml, Kagadis et al. 2011)")


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.html, summary.md and summary.json for a run folder",
        description="Compute instances/s, frames/s, MB/s (overall, per window, per operation, per user type), "
        "latency percentiles, errors by DICOM status and published claims from a run's sample rows, and write a "
        "self-contained report.html (figures inline), summary.md and summary.json into the run folder. "
        "The last line printed is the report's path.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder, e.g. results/20261127T120000Z-smoke")
    _add_settings(p)
    _add_claims(p)
    p.set_defaults(func=cmd_report)


EPILOG_COMPARE = """examples:
  pacsbench compare results/run-native results/run-kvm --out results/cmp
  pacsbench compare results/matrix-smoke --baseline-target native
Run folders are labelled by run.json target.label (else target.kind); a matrix folder holds matrix.json.
The last line printed is the report's path."""


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="put targets side by side: ratios to a baseline target with 95%% intervals, plots, environment",
        description="Compare runs of one scenario: each target against the baseline target as ratios with "
        "bootstrap 95%% confidence intervals over repetitions and time windows, throughput timelines, latency CDFs, "
        "scaling curves (when runs differ in users), server metrics, environments, claims.",
        epilog=EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN|MATRIX", help="run folders and/or matrix folders")
    p.add_argument("--baseline-target", default="native", help="target the others are divided by (default native)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/<time>-compare-SCENARIO)")
    _add_settings(p)
    _add_claims(p)
    p.set_defaults(func=cmd_compare)


EPILOG_GATE = """A metric regresses when its ratio to the baseline is beyond --max-regression AND the 95%
bootstrap interval of that ratio excludes 1. Exit 0: no regression; 1: regression; 2: bad input.
Metrics: ingest_instances_per_s, ingest_frames_per_s, ingest_mb_per_s, retrieve_instances_per_s,
retrieve_mb_per_s, query_requests_per_s, c_store_p95_ms, c_find_p95_ms, ... (c_<op>_p50/p90/p95/p99_ms)."""


def _add_gate(sub) -> None:
    p = sub.add_parser(
        "gate",
        help="exit 1 when a run is slower than a baseline beyond a threshold and beyond noise (CI gate)",
        description="Compare a run with a baseline (a file from `pacsbench baseline save`, or a run folder) "
        "and fail on a regression. Default metrics: ingest_instances_per_s and c_store_p95_ms, plus c_find_p95_ms "
        "when the baseline has it.",
        epilog=EPILOG_GATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s) of the release under test")
    p.add_argument("--baseline", type=Path, required=True, help="baseline JSON file or run folder")
    p.add_argument("--max-regression", default="10%", help="allowed slowdown, e.g. 10%% (default)")
    p.add_argument("--metric", action="append", help="metric to gate on (repeatable)")
    p.add_argument("--junit", type=Path, help="write JUnit XML here, one testcase per metric")
    _add_settings(p)
    p.set_defaults(func=cmd_gate)


def _add_baseline(sub) -> None:
    p = sub.add_parser("baseline", help="keep a run's figures as a small baseline file for `pacsbench gate`",
                       description="Manage gate baselines.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = actions.add_parser(
        "save", help="write a baseline JSON file from run folder(s)",
        description="Write per-metric point estimates and the per-window values the gate's interval needs "
        "(every throughput and each operation's p95 latency, or the --metric list). Several runs are repetitions.")
    save.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s) or a matrix folder")
    save.add_argument("--out", type=Path, required=True, help="baseline file to write, e.g. baseline.json")
    save.add_argument("--metric", action="append", help="metric to keep (repeatable; default: see above)")
    _add_settings(save)
    save.set_defaults(func=cmd_baseline_save)


EPILOG_MATRIX = """examples:
  pacsbench matrix scenarios/smoke.toml --targets native,tcg --repeat 2
  pacsbench matrix scenarios/vm.toml --targets native,tcg,tcg-tap --repeat 3 --results /tmp/results
A target is a [targets.NAME] table of the scenario, or a kind (native, kvm, tcg, orthanc, dcmtk) applied to the
scenario's [target]; kvm-tap and tcg-tap choose tap networking. The last line printed is the matrix folder."""


def _add_matrix(sub) -> None:
    p = sub.add_parser(
        "matrix",
        help="run a scenario against several targets, alternated (A B C A B C ...), and write matrix.json",
        description="Run one scenario against each target in turn, repeated: one run folder per repetition and "
        "target inside a matrix folder, and matrix.json listing them for `pacsbench compare`.",
        epilog=EPILOG_MATRIX,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, help="scenario file")
    p.add_argument("--targets", required=True, help="comma-separated target names, e.g. native,tcg,tcg-tap")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each target (default 3)")
    p.add_argument("--results", type=Path, default=Path("results"), help="where the matrix folder goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_matrix)


def _add_vm(sub) -> None:
    p = sub.add_parser("vm", help="the guest image: build it, check KVM, export it for VirtualBox or ESXi",
                       description="The reference archive in a Debian guest for the kvm and tcg targets "
                       "and for any hypervisor (export).")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build the guest image (cached; rebuilt only when its inputs change)",
                               description="debootstrap a small Debian 12 guest with the reference archive "
                               "starting on boot. Needs root and the Debian mirror. Prints the image path last.")
    build.add_argument("--force", action="store_true", help="rebuild even if a cached image matches")
    build.add_argument("--no-progress", action="store_true", help="no progress lines")
    build.set_defaults(func=cmd_vm_build)
    check = actions.add_parser("check", help="can KVM (and TCG) boot the guest's kernel here? (bounded probe)")
    check.set_defaults(func=cmd_vm_check)
    export = actions.add_parser("export", help="write the guest as an OVA (VirtualBox, ESXi), VMDK or qcow2",
                                description="Export the guest image. The OVA's VM has an IDE disk and an E1000 "
                                "card; the archive answers on port 11112 (AE PACSBENCH), address by DHCP.")
    export.add_argument("--format", choices=["ova", "vmdk", "qcow2"], default="ova", help="default ova")
    export.add_argument("--out", type=Path, required=True, help="file to write, e.g. pacsbench.ova")
    export.add_argument("--vcpus", type=int, default=2, help="vCPUs in the OVA's VM (default 2)")
    export.add_argument("--memory-mib", type=int, default=2048, help="memory of the OVA's VM (default 2048)")
    export.set_defaults(func=cmd_vm_export)


def cmd_matrix(args) -> int:
    from bench.runs.matrix import run_matrix

    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    folder = run_matrix(args.scenario, names, args.repeat, args.results, progress=not args.no_progress)
    print(folder)
    return 0


def cmd_vm_build(args) -> int:
    from bench.targets.vm.image import build_image

    image = build_image(progress=not args.no_progress, force=args.force)
    print(image.disk)
    return 0


def cmd_vm_check(args) -> int:
    from bench.targets.vm.image import ensure_image
    from bench.targets.vm.kvm import probe

    kernel = ensure_image().kernel
    results = [probe(kernel, accelerator) for accelerator in ("kvm", "tcg")]
    for result in results:
        print(f"{result.accelerator}: {'boots' if result.boots else 'cannot boot'} a guest: {result.reason} "
              f"({result.seconds:.1f} s)")
    return 0 if any(r.boots for r in results) else 1


def cmd_vm_export(args) -> int:
    from bench.targets.vm.export import export_image

    print(export_image(args.format, args.out, args.vcpus, args.memory_mib))
    return 0


def cmd_generate(args) -> int:
    from bench.studies.encode import transfer_syntax
    from bench.studies.generate import generate
    from bench.studies.profile import load_profile

    profile = load_profile(args.profile)
    syntax = transfer_syntax(args.transfer_syntax or profile.transfer_syntax)
    out = args.out or Path("results") / f"studies-{profile.name}-seed{args.seed}"
    totals = generate(profile, args.studies, args.seed, out, progress=not args.no_progress, syntax_name=syntax.name)
    print(f"wrote {totals.line()} ({syntax.name}) to {out}")
    return 0


def cmd_serve(args) -> int:
    from server_under_test.server import main as serve_main

    return serve_main(args.args, prog="pacsbench serve")


def _processes(args):
    from bench.runs.scenario_run import Processes

    if args.workers < 0 or args.remote_workers < 0:
        raise UserError("--workers and --remote-workers must be 0 or more")
    remote = args.remote_workers > 0
    return Processes(args.workers, args.remote_workers, args.master_bind or ("0.0.0.0" if remote else "127.0.0.1"),
                     args.master_port if args.master_port is not None else (5557 if remote else 0),
                     args.workers_timeout)


def _run_lines(s: dict, record: dict) -> list[str]:
    """Per user type figures, steps, and the headline (last)."""
    lines = []
    for user_type, t in s["user_types"].items():
        lines.append(f"  {user_type or '?'}: {t['requests']} requests, {t['failed']} failed, {t['instances_per_s']:.2f} "
                     f"instances/s, {t['frames_per_s']:.1f} frames/s, {t['mb_per_s']:.1f} MB/s")
    for operation, t in record.get("suboperations", {}).items():
        lines.append(f"  {operation}: {t['requests']} requests, sub-operations {t['completed']} completed, "
                     f"{t['failed']} failed, {t['warning']} warning; {t['arrived']} instances arrived")
    for step in record.get("steps", []):
        lines.append(f"  step {step['users']:>3} users: {step['instances_per_s']:.2f} instances/s, "
                     f"{step['frames_per_s']:.1f} frames/s, {step['mb_per_s']:.1f} MB/s, "
                     f"C-STORE p50 {step['c_store_p50_ms']} ms")
    lines.append(f"{s['instances']} instances acknowledged in {s['window_seconds']:.1f} s: "
                 f"{s['instances_per_s']:.2f} instances/s, {s['frames_per_s']:.1f} frames/s, "
                 f"{s['mb_per_s']:.1f} MB/s, {s['failures']} failed requests")
    return lines


def cmd_run(args) -> int:
    from bench.runs.scenario_run import run_scenario  # imports locust first

    run_dir, record = run_scenario(args.scenario, args.results, progress=not args.no_progress,
                                   processes=_processes(args), verify=args.verify)
    from bench.report.page import load_samples, summarize

    try:
        s = summarize(load_samples(run_dir))
        print("\n".join(_run_lines(s, record)))
        failed, errors = s["failures"], s["failures_by_error"]
    except UserError as exc:
        print(f"pacsbench: warning: {exc}", file=sys.stderr)
        failed, errors = 1, {}
    if failed:
        common = f" (most frequent: {max(errors, key=errors.get)})" if errors else ""
        print(f"pacsbench: warning: {failed} requests failed{common}; see {run_dir / 'samples.csv'}", file=sys.stderr)
    print(run_dir)
    verified = record.get("verify", {}).get("ok", True)
    return 1 if record.get("status") != "completed" or not verified else 0


def cmd_send(args) -> int:
    import json

    from bench.dicom.peer import Peer
    from bench.load.send import scan_folder, send_files

    if args.associations < 1:
        raise UserError("--associations must be 1 or more")
    files = scan_folder(args.folder)
    result = send_files(files, Peer(args.host, args.port, args.aet), args.calling_aet, args.associations,
                        args.max_pdu, args.timeout)
    for error in result.errors:
        print(f"pacsbench: error: {error}", file=sys.stderr)
    print(json.dumps(result.rates()) if args.json else result.line())
    return 1 if result.failures else 0


def cmd_calibrate(args) -> int:
    from gevent import monkey

    monkey.patch_all()  # measure the path as locust runs it: cooperative sockets
    from bench.load.calibrate import calibrate

    entry = calibrate(args.profile, args.transfer_syntax, args.instances, args.sink, progress=not args.no_progress)
    scu = entry["storescu"]
    if scu:
        print(f"DCMTK storescu into the same sink: {scu['instances_per_s']:.1f} instances/s, {scu['mb_per_s']:.1f} MB/s "
              f"(harness/storescu {entry['instances_per_s'] / max(scu['instances_per_s'], 1e-9):.2f}x)")
    print(f"harness ceiling ({entry['profile']}, {entry['transfer_syntax']}, {entry['sink']}): "
          f"{entry['instances_per_s']:.1f} instances/s, {entry['mb_per_s']:.1f} MB/s, one association, one process")
    print(entry["path"])
    return 0


def cmd_verify(args) -> int:
    from bench.runs.verify import summary_line, verify_run

    result = verify_run(args.run_dir)
    print(summary_line(result))
    return 0 if result["ok"] else 1


def cmd_worker(args) -> int:
    from bench.load.worker import run_worker  # imports locust first

    return run_worker(args.master, args.master_port, args.join_timeout)


def _settings(args):
    from bench.analysis.aggregate import Settings, Warmup

    return Settings(Warmup.parse(args.warmup), args.window)


def cmd_report(args) -> int:
    import json

    from bench.report.page import build_report

    report = build_report(args.run_dir, _settings(args), args.claims)
    s = json.loads((report.parent / "summary.json").read_text())
    print(f"{s['instances_per_s']:.2f} instances/s, {s['frames_per_s']:.1f} frames/s, {s['mb_per_s']:.1f} MB/s, "
          f"C-STORE p50/p95/p99 {s['latency_ms']['p50']}/{s['latency_ms']['p95']}/{s['latency_ms']['p99']} ms "
          f"({s['settings']['warmup']})")
    print(report)
    return 0


def cmd_compare(args) -> int:
    from bench.report.page import build_comparison_report

    report = build_comparison_report(args.runs, args.out, _settings(args), args.baseline_target, args.claims)
    print(report.parent / "summary.md")
    print(report)
    return 0


def cmd_gate(args) -> int:
    from bench.analysis.gate import parse_threshold, run_gate, write_junit

    checks = run_gate(args.runs, args.baseline, parse_threshold(args.max_regression), args.metric, _settings(args))
    for check in checks:
        print(check.line())
    if args.junit:
        write_junit(checks, args.junit)
    regressed = [c.metric for c in checks if c.regressed]
    print(f"gate: {'FAILED, regression in ' + ', '.join(regressed) if regressed else 'passed'} "
          f"({len(checks)} metrics checked)")
    return 1 if regressed else 0


def cmd_baseline_save(args) -> int:
    from bench.analysis.gate import save_baseline

    print(save_baseline(args.runs, args.out, _settings(args), args.metric))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacsbench",
        description="A DICOM archive benchmark: synthetic DSA studies, locust-driven DICOM clients, "
        "a reference archive, and reports.",
    )
    parser.add_argument("--version", action="version", version=f"pacsbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_generate(sub)
    _add_serve(sub)
    _add_run(sub)
    _add_send(sub)
    _add_calibrate(sub)
    _add_verify(sub)
    _add_worker(sub)
    _add_report(sub)
    _add_compare(sub)
    _add_gate(sub)
    _add_baseline(sub)
    _add_matrix(sub)
    _add_vm(sub)
    return parser


LOCUST_COMMANDS = {"run", "worker", "matrix"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    raise_open_files_limit()
    if argv[:1] and argv[0] in LOCUST_COMMANDS:
        # locust runs on gevent: patch before anything (targets, urllib, ssl) is imported,
        # or ssl breaks (RecursionError) and sockets stay blocking.
        from gevent import monkey

        monkey.patch_all()
    parser = build_parser()
    if argv[:1] == ["serve"]:
        # Everything after `serve` belongs to the archive's own parser (argparse's REMAINDER
        # would refuse a leading option such as --help).
        args = argparse.Namespace(func=cmd_serve, args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"pacsbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pacsbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
