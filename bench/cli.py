"""The `pacsbench` command line: generate, serve, run, report, compare, gate, baseline.

Heavy modules are imported inside each command: `run` must import locust (gevent
monkey-patching) before anything else opens a socket or starts a thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import __version__
from bench.errors import UserError

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
        "Profiles: bench/profiles/*.toml or a path to your own .toml.",
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
        description="Run a benchmark scenario (TOML): prepare the study pool (cached), start or reach the target, "
        "run locust users storing studies for the scenario's duration, and write results/<run-id>/ with "
        "run.json, samples.csv and locust's CSV statistics.",
        epilog=EPILOG_RUN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, help="scenario file, e.g. scenarios/smoke.toml")
    p.add_argument("--results", type=Path, default=Path("results"), help="where run folders go (default ./results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)


def _add_settings(p) -> None:
    p.add_argument("--warmup", default="10%", help="leading part of each run not measured: a share such as 10%% "
                   "(of first request to last response) or seconds such as 5s (default 10%%)")
    p.add_argument("--window", type=float, default=1.0, metavar="SECONDS",
                   help="time window for timelines and the bootstrap's resampling unit (default 1 s)")


def _add_claims(p) -> None:
    p.add_argument("--claims", type=Path, action="append", metavar="TOML",
                   help="published claims to check (repeatable; default: bench/claims/*.toml, Kagadis et al. 2011)")


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
    from bench.matrix import run_matrix

    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    folder = run_matrix(args.scenario, names, args.repeat, args.results, progress=not args.no_progress)
    print(folder)
    return 0


def cmd_vm_build(args) -> int:
    from bench.vm.image import build_image

    image = build_image(progress=not args.no_progress, force=args.force)
    print(image.disk)
    return 0


def cmd_vm_check(args) -> int:
    from bench.vm.image import ensure_image
    from bench.vm.kvm import probe

    kernel = ensure_image().kernel
    results = [probe(kernel, accelerator) for accelerator in ("kvm", "tcg")]
    for result in results:
        print(f"{result.accelerator}: {'boots' if result.boots else 'cannot boot'} a guest: {result.reason} "
              f"({result.seconds:.1f} s)")
    return 0 if any(r.boots for r in results) else 1


def cmd_vm_export(args) -> int:
    from bench.vm.export import export_image

    print(export_image(args.format, args.out, args.vcpus, args.memory_mib))
    return 0


def cmd_generate(args) -> int:
    from bench.encode import transfer_syntax
    from bench.generate import generate
    from bench.profile import load_profile

    profile = load_profile(args.profile)
    syntax = transfer_syntax(args.transfer_syntax or profile.transfer_syntax)
    out = args.out or Path("results") / f"studies-{profile.name}-seed{args.seed}"
    totals = generate(profile, args.studies, args.seed, out, progress=not args.no_progress, syntax_name=syntax.name)
    print(f"wrote {totals.line()} ({syntax.name}) to {out}")
    return 0


def cmd_serve(args) -> int:
    from server_under_test.server import main as serve_main

    return serve_main(args.args, prog="pacsbench serve")


def cmd_run(args) -> int:
    from bench.run import run_scenario  # imports locust first

    run_dir, record = run_scenario(args.scenario, args.results, progress=not args.no_progress)
    from bench.report import load_samples, summarize

    try:
        s = summarize(load_samples(run_dir))
        print(f"{s['instances']} instances acknowledged in {s['window_seconds']:.1f} s: "
              f"{s['instances_per_s']:.2f} instances/s, {s['frames_per_s']:.1f} frames/s, "
              f"{s['mb_per_s']:.1f} MB/s, {s['failures']} failed requests")
        failed = s["failures"]
    except UserError as exc:
        print(f"pacsbench: warning: {exc}", file=sys.stderr)
        failed = 1
    if failed:
        print(f"pacsbench: warning: {failed} requests failed; see {run_dir / 'samples.csv'}", file=sys.stderr)
    print(run_dir)
    return 1 if record.get("status") != "completed" else 0


def _settings(args):
    from bench.aggregate import Settings, Warmup

    return Settings(Warmup.parse(args.warmup), args.window)


def cmd_report(args) -> int:
    import json

    from bench.report import build_report

    report = build_report(args.run_dir, _settings(args), args.claims)
    s = json.loads((report.parent / "summary.json").read_text())
    print(f"{s['instances_per_s']:.2f} instances/s, {s['frames_per_s']:.1f} frames/s, {s['mb_per_s']:.1f} MB/s, "
          f"C-STORE p50/p95/p99 {s['latency_ms']['p50']}/{s['latency_ms']['p95']}/{s['latency_ms']['p99']} ms "
          f"({s['settings']['warmup']})")
    print(report)
    return 0


def cmd_compare(args) -> int:
    from bench.report import build_comparison_report

    report = build_comparison_report(args.runs, args.out, _settings(args), args.baseline_target, args.claims)
    print(report.parent / "summary.md")
    print(report)
    return 0


def cmd_gate(args) -> int:
    from bench.gate import parse_threshold, run_gate, write_junit

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
    from bench.gate import save_baseline

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
    _add_report(sub)
    _add_compare(sub)
    _add_gate(sub)
    _add_baseline(sub)
    _add_matrix(sub)
    _add_vm(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
