"""`pacsbench gate`: exit 1 when a run is slower than a baseline beyond a threshold and beyond noise."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.settings import add_settings, settings

EPILOG_GATE = """A metric regresses when its ratio to the baseline is beyond --max-regression AND the 95%
bootstrap interval of that ratio excludes 1. Exit 0: no regression; 1: regression; 2: bad input, or cannot
decide (a run or the baseline has fewer than 10 full windows: too short for an interval).
Metrics: ingest_instances_per_s, ingest_frames_per_s, ingest_mb_per_s, retrieve_instances_per_s,
retrieve_mb_per_s, query_requests_per_s, c_store_p95_ms, c_find_p95_ms, ... (c_<op>_p50/p90/p95/p99_ms)."""


def add_parser(sub) -> None:
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
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="use runs whose run.json status is not 'completed' (stopped early, failed)",
    )
    add_settings(p)
    p.set_defaults(func=cmd_gate)


def cmd_gate(args) -> int:
    from bench.analysis.gate import parse_threshold, run_gate, write_junit

    checks = run_gate(
        args.runs,
        args.baseline,
        parse_threshold(args.max_regression),
        args.metric,
        settings(args),
        args.include_incomplete,
    )
    for check in checks:
        print(check.line())
    if args.junit:
        write_junit(checks, args.junit)
    undecided = [c.metric for c in checks if c.undecided]
    if undecided:
        print(f"gate: cannot decide {', '.join(undecided)}: too short for an interval ({len(checks)} metrics checked)")
        return 2
    regressed = [c.metric for c in checks if c.regressed]
    print(
        f"gate: {'FAILED, regression in ' + ', '.join(regressed) if regressed else 'passed'} "
        f"({len(checks)} metrics checked)"
    )
    return 1 if regressed else 0
