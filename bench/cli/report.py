"""`pacsbench report`: report.html, summary.md and summary.json for one run folder."""

from __future__ import annotations

from pathlib import Path

from bench.cli.settings import add_claims, add_settings, settings


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write report.html, summary.md and summary.json for a run folder",
        description="Compute instances/s, frames/s, MB/s (overall, per window, per operation, per user type), "
        "latency percentiles, errors by DICOM status and published claims from a run's sample rows, and write a "
        "self-contained report.html (figures inline), summary.md and summary.json into the run folder. "
        "The last line printed is the report's path.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder, e.g. results/20261127T120000Z-smoke")
    add_settings(p)
    add_claims(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from bench.report.page import build_report
    from bench.results.record_base import read_record
    from bench.results.records import SUMMARY_FILE, SummaryRecord

    report = build_report(args.run_dir, settings(args), args.claims)
    s = read_record(SummaryRecord, report.parent / SUMMARY_FILE, "a summary")
    latency, bound = s.latency_ms or {}, s.bound_by or {}
    print(
        f"{s.instances_per_s:.2f} instances/s, {s.frames_per_s:.1f} frames/s, {s.mb_per_s:.1f} MB/s, "
        f"C-STORE p50/p95/p99 {latency['p50']}/{latency['p95']}/{latency['p99']} ms "
        f"({(s.settings or {})['warmup']}); bounded by {bound['limit']} ({bound['evidence']})"
    )
    print(report)
    return 0
