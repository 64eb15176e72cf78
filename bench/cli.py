"""The `pacsbench` command line: generate, serve, run, report.

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


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.html, summary.md and summary.json for a run folder",
        description="Compute instances/s, frames/s, MB/s and latency percentiles from a run's sample rows and "
        "write a self-contained report.html (plot inline), summary.md and summary.json into the run folder.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder, e.g. results/20261127T120000Z-smoke")
    p.set_defaults(func=cmd_report)


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


def cmd_report(args) -> int:
    from bench.report import build_report, load_samples, summarize

    report = build_report(args.run_dir)
    s = summarize(load_samples(args.run_dir))
    print(f"{s['instances_per_s']:.2f} instances/s, {s['frames_per_s']:.1f} frames/s, {s['mb_per_s']:.1f} MB/s, "
          f"C-STORE p50/p95/p99 {s['latency_ms']['p50']}/{s['latency_ms']['p95']}/{s['latency_ms']['p99']} ms")
    print(report)
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
