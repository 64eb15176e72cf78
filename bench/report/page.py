"""The report stage: write a run's or a comparison's report.html, summary.md and summary.json.

The figures come from bench.analysis (sample rows only); bench.report.sections lays them out once as
sections, and render_html and render_markdown render those. report.html is self-contained (figures inline
as base64 PNG, no external URL) and every string that came from a user or from DICOM is escaped.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from bench.analysis.aggregate import (  # noqa: F401 (re-exported: `pacsbench run` prints a summary)
    Settings,
    load_samples,
    summarize,
)
from bench.analysis.claims import load_claims
from bench.analysis.compare import build_comparison
from bench.analysis.runset import check_completed, load_run, load_runs
from bench.common.errors import UserError
from bench.report import facts
from bench.report.model import Report
from bench.report.render_html import render_html
from bench.report.render_markdown import render_markdown
from bench.report.runs import run_integrity, run_notes
from bench.report.sections import comparison_report, run_report
from bench.results.record_base import record_json
from bench.results.records import SUMMARY_FILE, SummaryRecord


def _write_outputs(folder: Path, record: dict, report: Report) -> Path:
    """summary.json, summary.md and report.html, each rendered in full before any is written.

    summary.json goes through its record (bench.results.records.SummaryRecord): a field it does not
    name fails here, not in the tool that reads it. The JSON round trip turns numpy values into numbers."""
    summary = SummaryRecord.model_validate(json.loads(json.dumps(record, default=str)))
    outputs = {
        SUMMARY_FILE: record_json(summary),
        "summary.md": render_markdown(report),
        "report.html": render_html(report),
    }
    for name, text in outputs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder / "report.html"


def build_report(run_dir: Path, settings: Settings = Settings(), claim_paths: list[Path] | None = None) -> Path:
    """Write summary.json, summary.md and report.html into the run folder; return the HTML path."""
    run = load_run(run_dir)
    data, groups = build_comparison([run], settings, run.target, load_claims(claim_paths))
    title = f"pacsbench run {facts.run_id(run) or run_dir.name}: {run.scenario}"
    integrity, notes = run_integrity(run), run_notes(run)
    report = run_report(title, data, groups, settings, integrity, notes)
    return _write_outputs(run_dir, facts.run_record(run, groups[0].summaries[0], data, integrity, notes), report)


def default_compare_folder(results: Path, scenario: str) -> Path:
    from bench.results.run_folder import new_run_dir

    return new_run_dir(results, f"compare-{scenario}")


def build_comparison_report(
    paths: list[Path],
    out: Path | None,
    settings: Settings = Settings(),
    baseline: str = "native",
    claim_paths: list[Path] | None = None,
    allow_unequal_budgets: bool = False,
    include_incomplete: bool = False,
) -> Path:
    """Write the comparison of runs (or matrices) into `out`; return the HTML path."""
    runs = load_runs(paths)
    check_completed(runs, include_incomplete)
    claim_sets = load_claims(claim_paths)
    data, groups = build_comparison(runs, settings, baseline, claim_sets, allow_unequal_budgets)
    folder = out or default_compare_folder(Path("results"), data["scenario"])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror}") from None
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    title = f"pacsbench comparison: {data['scenario']} ({len(runs)} runs, baseline {baseline})"
    report = comparison_report(title, data, groups, settings)
    return _write_outputs(folder, facts.comparison_record(data, stamp), report)
