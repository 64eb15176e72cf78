"""`pacsbench compare`: targets side by side, as ratios to a baseline target with 95% intervals."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.settings import add_claims, add_settings, settings

EPILOG_COMPARE = """examples:
  pacsbench compare results/run-native results/run-kvm --out results/cmp
  pacsbench compare results/matrix-smoke --baseline-target native
Run folders are labelled by run.json target.label (else target.kind); a matrix folder holds matrix.json.
The last line printed is the report's path."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="put targets side by side: ratios to a baseline target with 95%% intervals, plots, environment",
        description="Compare runs of one scenario: each target against the baseline target as ratios with "
        "bootstrap 95% confidence intervals over repetitions and time windows, throughput timelines, latency CDFs, "
        "scaling curves (when runs differ in users), server metrics, environments, claims.",
        epilog=EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN|MATRIX", help="run folders and/or matrix folders")
    p.add_argument("--baseline-target", default="native", help="target the others are divided by (default native)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/<time>-compare-SCENARIO)")
    p.add_argument(
        "--allow-unequal-budgets",
        action="store_true",
        help="compare runs whose targets had different CPUs or memory (the headline says so)",
    )
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="compare runs whose run.json status is not 'completed' (stopped early, failed)",
    )
    add_settings(p)
    add_claims(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from bench.report.page import build_comparison_report
    from bench.results.record_base import read_record
    from bench.results.records import SUMMARY_FILE, SummaryRecord

    report = build_comparison_report(
        args.runs,
        args.out,
        settings(args),
        args.baseline_target,
        args.claims,
        args.allow_unequal_budgets,
        args.include_incomplete,
    )
    for note in read_record(SummaryRecord, report.parent / SUMMARY_FILE, "a summary").evidence_notes or []:
        print(f"compare: {note}")  # a single run, or one too short for an interval, is said where it is read
    print(report.parent / "summary.md")
    print(report)
    return 0
