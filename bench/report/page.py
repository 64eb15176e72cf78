"""The report stage: render a run or a comparison as report.html, summary.md and summary.json.

The figures come from bench.analysis.aggregate and bench.analysis.compare (sample rows only); this module
only lays them out. report.html is self-contained (figures inline as base64 PNG, no
external URL) and every string that came from a user or from DICOM is escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path

import numpy as np

from bench.analysis.aggregate import (  # noqa: F401 (re-exported: `pacsbench run` prints a summary)
    METRICS,
    Settings,
    load_samples,
    load_server_metrics,
    requested,
    summarize,
    timeline,
)
from bench.analysis.bounds import verdict_text
from bench.analysis.claims import load_claims
from bench.analysis.compare import Group, budget_text, build_comparison
from bench.analysis.growth import MIN_SPAN_SECONDS, growth_text
from bench.analysis.runset import RunData, check_completed, load_run, load_runs
from bench.common.errors import UserError
from bench.report import figures
from bench.results.record_base import write_record
from bench.results.records import SUMMARY_FILE, SummaryRecord
from bench.results.run_record import RunRecord, VerifyRecord

CDF_OPERATIONS = ("C-STORE", "C-FIND", "C-MOVE", "C-GET")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { text-align: left; padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { font-weight: 600; }
td { font-variant-numeric: tabular-nums; }
.answer { font-size: 1.15em; background: #f3f6fa; padding: 0.6em 1em; border-left: 4px solid #4a78b5; }
.bound { color: #a40000; font-weight: 600; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; }
.wide { overflow-x: auto; font-size: 0.85em; }
"""


# --- formatting ------------------------------------------------------------------------------


def _num(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ceiling_notes(group: dict) -> str:
    """The ingest ceiling's note, and the retrieval one when the group retrieved."""
    retrieval = group.get("retrieve_calibration")
    return group["calibration"]["note"] + (f"; {retrieval['note']}" if retrieval else "")


def _with_interval(estimate: dict | None, digits: int = 1) -> str:
    if not estimate:
        return "n/a"
    if estimate.get("ci_low") is None:
        return f"{_num(estimate['value'], digits)} [no interval: too short]"
    return (
        f"{_num(estimate['value'], digits)} [{_num(estimate['ci_low'], digits)}, {_num(estimate['ci_high'], digits)}]"
    )


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_cell(text) -> str:
    return html.escape(str(text), quote=False).replace("|", "/").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows),
        "",
    ]


def _figure(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


# --- tables ----------------------------------------------------------------------------------

GROUP_HEADERS = [
    "target",
    "users",
    "runs",
    "instances/s [95% CI]",
    "frames/s",
    "MB/s",
    "C-STORE p95 ms",
    "harness ceiling",
    "bounded by",
]


def _failed_beside(failed: dict, operation: str) -> str:
    """' (3 failed)' after a percentile whose requests include failures; percentiles count them at their elapsed time."""
    count = failed.get(operation, 0)
    return f" ({count:,} failed)" if count else ""


def _percentile_cell(latency: dict, name: str) -> str:
    return _num(latency[name]) + (f" ({latency['failed']:,} failed)" if latency.get("failed") else "")


def _group_rows(data: dict) -> list[list[str]]:
    rows = []
    for g in data["groups"]:
        e = g["estimates"]
        rows.append(
            [
                g["label"],
                str(g["users"]),
                str(g["repetitions"]),
                _with_interval(e.get("ingest_instances_per_s"), 2),
                _with_interval(e.get("ingest_frames_per_s")),
                _with_interval(e.get("ingest_mb_per_s")),
                _with_interval(e.get("c_store_p95_ms")) + _failed_beside(g.get("failed_by_operation", {}), "C-STORE"),
                _ceiling_notes(g),
                verdict_text(g["bound_by"]),
            ]
        )
    return rows


def _optional_metric_rows(data: dict) -> list[list[str]]:
    """Retrieve and query figures, for the groups that measured them."""
    names = [
        "retrieve_instances_per_s",
        "retrieve_mb_per_s",
        "query_requests_per_s",
        "c_find_p95_ms",
        "c_move_p95_ms",
        "c_get_p95_ms",
    ]
    return [
        [g["label"], METRICS[n].label, _with_interval(g["estimates"][n], 2)]
        for g in data["groups"]
        for n in names
        if n in g["estimates"]
    ]


RATIO_HEADERS = ["target", "users", "figure", "ratio to baseline [95% CI]", "reading", "runs (baseline runs)"]


def _ratio_rows(data: dict) -> list[list[str]]:
    return [
        [
            r["target"],
            str(r["users"]),
            r["label"],
            _with_interval(r, 3),
            r["reading"],
            f"{r['repetitions']} ({r['baseline_repetitions']})",
        ]
        for r in data["ratios"]
    ]


def _claim_tables(data: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per claim file: one row per claim, one column per target ("measured: verdict")."""
    tables = []
    first = data["groups"][0]["claims"]
    for i, claim_set in enumerate(first):
        headers = ["published claim", "bound", *(g["label"] for g in data["groups"])]
        rows = []
        for j, verdict in enumerate(claim_set["verdicts"]):
            cells = [_verdict_text(g["claims"][i]["verdicts"][j]) for g in data["groups"]]
            rows.append([verdict["statement"], verdict["bound"], *cells])
        tables.append((f"{claim_set['title']}. {claim_set['source']}".strip(), headers, rows))
    return tables


def _verdict_text(v: dict) -> str:
    measured = "" if v["measured"] is None else f"{_num(v['measured'], 2)}: "
    return f"{measured}{v['verdict'].upper()}" + (f" ({v['note']})" if v["note"] else "")


ERROR_SUMMARY_HEADERS = ["target", "run", "operation", "DICOM status", "count", "most frequent error"]


def _all_error_rows(groups: list[Group]) -> list[list[str]]:
    return [
        [run.target, run.folder.name, *row]
        for g in groups
        for run, s in zip(g.runs, g.summaries)
        for row in _error_rows(s)
    ]


ENV_HEADERS = [
    "target",
    "run",
    "rep",
    "hypervisor",
    "vCPUs",
    "memory",
    "budget",
    "disk",
    "network",
    "fsync",
    "max PDU",
    "server",
    "load host",
]


def _environment_rows(data: dict) -> list[list[str]]:
    return [
        [
            e["target"],
            e["run"],
            str(e["repetition"]),
            e["hypervisor"],
            e["vcpus"],
            e["memory"],
            e["budget"],
            e["disk"],
            e["network"],
            e["fsync"],
            e["max_pdu"],
            e["server"],
            e["host"],
        ]
        for e in data["environment"]
    ]


BREAKDOWN_HEADERS = [
    "",
    "requests",
    "failed",
    "warnings (stored)",
    "instances/s",
    "frames/s",
    "MB/s",
    "p50 ms",
    "p90 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
]


def _breakdown_rows(table: dict) -> list[list[str]]:
    return [
        [
            key,
            str(v["requests"]),
            str(v["failed"]),
            str(v.get("warnings", 0)),
            _num(v["instances_per_s"], 2),
            _num(v["frames_per_s"]),
            _num(v["mb_per_s"]),
            *(_percentile_cell(v["latency_ms"], p) for p in ("p50", "p90", "p95", "p99", "max")),
        ]
        for key, v in table.items()
    ]


ERROR_HEADERS = ["operation", "DICOM status", "count", "most frequent error"]


def _error_rows(summary: dict) -> list[list[str]]:
    return [[e["operation"], e["status"], str(e["count"]), e["example"]] for e in summary["errors_by_status"]]


def _answer(data: dict) -> str:
    """The one-paragraph answer at the top of the page: the figures, what bounded them, unequal budgets."""
    bounds = " ".join(f"{g['label']}{f' ({on})' if (on := g.get('runs_on')) else ''} bounded by "
                      f"{verdict_text(g['bound_by'])}." for g in data["groups"])
    budgets = f" {data['budgets_note'][0].upper()}{data['budgets_note'][1:]}." if data.get("budgets_note") else ""
    evidence = " " + " ".join(f"{note}." for note in data.get("evidence_notes", []))  # labels keep their case
    return f"{_figures_answer(data)} {bounds}{budgets}{evidence.rstrip()}"


def _ratio_interval_text(row: dict) -> str:
    if row.get("ci_low") is None:
        return "no interval: too short"
    return f"95% CI {row['ci_low']:.2f}-{row['ci_high']:.2f}"


def _figures_answer(data: dict) -> str:
    if not data["ratios"]:
        g = data["groups"][0]
        e = g["estimates"]
        return (
            f"{g['label']}: {_with_interval(e.get('ingest_instances_per_s'), 2)} instances/s, "
            f"{_with_interval(e.get('ingest_frames_per_s'))} frames/s, {_with_interval(e.get('ingest_mb_per_s'))} "
            f"MB/s stored (95% bootstrap intervals); {g['calibration']['note']}."
        )
    parts = [
        f"{r['target']} ({r['users']} users) reaches {r['value']:.2f}x of {data['baseline_target']}'s "
        f"{r['label']} ({_ratio_interval_text(r)}: {r['reading']})"
        for r in data["ratios"]
        if r["metric"] in ("ingest_instances_per_s", "retrieve_instances_per_s")
    ]
    return "; ".join(parts) + "." if parts else "No figure is shared by a target and the baseline."


# --- figures ---------------------------------------------------------------------------------


def _run_label(run: RunData) -> str:
    return f"{run.target} u{run.users} r{run.repetition}"


Picture = tuple[bytes, str, str]  # PNG, alt text, caption


def _run_lines(groups: list[Group]) -> list[tuple[str, RunData, object]]:
    several = len(groups) > 1
    return [(_run_label(r) if several else r.folder.name, r, m) for g in groups for r, m in zip(g.runs, g.measurements)]


def _fault_marks(groups: list[Group]) -> list[tuple[float, str]]:
    """Each injected fault as (seconds since its run's first request, action): the timeline's origin."""
    return [(fault.unix_time - float(r.samples["start"].min()), fault.action)
            for _, r, _ in _run_lines(groups) for fault in r.run.faults or [] if fault.happened]


def _timeline_figures(groups: list[Group], window: float, ceiling: float | None, bound_note: str) -> list[Picture]:
    lines = [(label, timeline(r.samples, window), m.begin - m.run_start) for label, r, m in _run_lines(groups)]
    marks = _fault_marks(groups)
    fault_note = " Dashed black lines: faults injected (see the fault table)." if marks else ""
    out = [
        (
            figures.timeline_png(lines, "instances", "instances/s stored", ceiling, marks),
            "throughput timeline",
            f"Acknowledged C-STORE instances/s per {window:g} s window. {bound_note}{fault_note}",
        )
    ]
    if any(float(b["retrieve_instances"].sum()) > 0 for _, b, _ in lines):
        out.append(
            (
                figures.timeline_png(lines, "retrieve_instances", "instances/s retrieved"),
                "retrieve timeline",
                f"Instances/s retrieved (C-MOVE/C-GET) per {window:g} s window.",
            )
        )
    return out


def _latency_figures(groups: list[Group]) -> list[Picture]:
    several_loads = len({g.users for g in groups}) > 1
    cdf = {}
    for op in CDF_OPERATIONS:
        series = [
            (
                g.label(several_loads),
                np.concatenate([requested(m.samples, (op,))["latency_ms"].to_numpy() for m in g.measurements]),
            )
            for g in groups
        ]
        if any(len(latencies) for _, latencies in series):
            cdf[op] = [(label, latencies) for label, latencies in series if len(latencies)]
    if not cdf:
        return []
    return [
        (
            figures.latency_cdf_png(cdf),
            "latency CDFs",
            "Share of requests answered within a given latency, after the warm-up (failed requests and "
            "timeouts at their elapsed time).",
        )
    ]


def _scaling_figures(data: dict, ceiling: float | None, bound_note: str) -> list[Picture]:
    curves = {}
    for g in data["groups"]:
        if "ingest_instances_per_s" in g["estimates"]:
            curves.setdefault(g["target"], []).append((g["users"], g["estimates"]["ingest_instances_per_s"]))
    if not any(len(points) > 1 for points in curves.values()):
        return []
    return [
        (
            figures.scaling_png(curves, "instances/s stored", ceiling),
            "scaling curve",
            f"Stored instances/s against concurrent users, 95% intervals. {bound_note}",
        )
    ]


def _server_figures(groups: list[Group]) -> list[Picture]:
    recorded = [
        (label, frame, m.run_start)
        for label, r, m in _run_lines(groups)
        for frame, _ in [load_server_metrics(r.folder)]
        if frame is not None
    ]
    if not recorded:
        return []
    out = []
    if any(figures.RESOURCE_COLUMNS & set(frame.columns) for _, frame, _ in recorded):
        out.append(
            (
                figures.resources_png(recorded),
                "resource timelines",
                "CPU, disk and network per second from server_metrics.csv (pacsbench's sampler): what bounded "
                "the figures above.",
            )
        )
    others = [(label, frame.drop(columns=list(figures.RESOURCE_COLUMNS & set(frame.columns))), t0)
              for label, frame, t0 in recorded]
    if any(len(frame.columns) > 1 for _, frame, _ in others):
        out.append(
            (
                figures.server_metrics_png([o for o in others if len(o[1].columns) > 1]),
                "server metrics",
                "Server CPU, memory and disk as recorded in server_metrics.csv (runs without the file are left out).",
            )
        )
    return out


def _figures(data: dict, groups: list[Group], settings: Settings) -> list[Picture]:
    ceiling = min(
        (
            g["calibration"]["ceiling_instances_per_s"]
            for g in data["groups"]
            if g["calibration"].get("ceiling_instances_per_s")
        ),
        default=None,
    )
    bound_note = "; ".join(f"{g['label']}: {g['calibration']['note']}" for g in data["groups"])
    out = []
    if data["ratios"]:
        out.append(
            (
                figures.ratio_png(data["ratios"], data["baseline_target"]),
                "ratios to the baseline",
                f"Each target against {data['baseline_target']} at the same load; bars: 95% bootstrap intervals "
                f"over repetitions and {settings.window_seconds:g} s windows. {bound_note}",
            )
        )
    out += _timeline_figures(groups, settings.window_seconds, ceiling, bound_note)
    out += _server_figures(groups)  # beside the throughput timeline: what bounded it
    out += _latency_figures(groups)
    return out + _scaling_figures(data, ceiling, bound_note)


def _server_metrics_notes(groups: list[Group]) -> list[str]:
    return [
        f"{r.folder.name}: {note}"
        for g in groups
        for r in g.runs
        for _, note in [load_server_metrics(r.folder)]
        if note
    ]


# --- pages -----------------------------------------------------------------------------------


def _method_items(data: dict) -> list[str]:
    s = data["settings"]
    return [
        f"Warm-up: {s['warmup']} (rule {s['warmup_rule']}; change with --warmup).",
        f"Windows: {s['window_seconds']:g} s of response time; a request counts in the window its response "
        "arrived in. Figures with intervals are the mean over repetitions of the mean over full windows.",
        f"Intervals: {s['bootstrap']}.",
        "Throughput counts acknowledged requests only (DICOM status success or warning, such as B000 "
        "coercion: the instance was stored, and warnings are counted beside); MB = 10^6 bytes.",
        "Latency percentiles are over every request, failed ones and timeouts at their elapsed time; the "
        "failed count stands beside each.",
        "The measured span ends at the last response before the stop signal; requests answered after it "
        "(the drain) are counted, not measured.",
        "Client-bound: a figure above 80% of the harness ceiling recorded by calibration (run.json "
        "'calibration') may measure the load generator rather than the archive.",
    ]


def _measured_note(s: dict) -> str:
    drain = s.get("drain") or {}
    return (
        f"Measured {s['window_seconds']:g} s after {s['warmup_seconds']:g} s of warm-up "
        f"({s['warmup_requests_dropped']} requests dropped); {_drain_text(drain)}; {s['users']} users, "
        f"{s['associations']} associations."
    )


def _drain_text(drain: dict) -> str:
    if not drain.get("requests"):
        return "no request answered after the stop signal"
    return f"drain after the stop signal: {drain['requests']} requests over {drain['seconds']:g} s, not measured"


FAULT_HEADERS = ["run", "action", "at (s)", "duration (s)", "recovery (s)", "recovered by", "archive start-up (s)",
                 "failed during outage", "acknowledged before", "lost", "changed"]


def _failed_text(fault: dict) -> str:
    by_status = ", ".join(f"{count} {status}" for status, count in fault["failed_by_status"].items())
    return f"{fault['failed_during_outage']:,}" + (f" ({by_status})" if by_status else "")


def _action_text(fault: dict) -> str:
    if fault["action"] == "backup" and fault.get("happened"):
        b = fault["backup"]
        return f"backup ({b['instances']:,} instances, {b['bytes'] / 1e6:.1f} MB, {b['seconds']:g} s, {b['mb_per_s']:g} MB/s)"
    if fault.get("recover") == "restore":
        r = fault["restore"]
        return (f"{fault['action']}, data lost and restored from the backup {fault['recovery_point_seconds']:g} s "
                f"before ({r['seconds']:g} s, {r['mb_per_s']:g} MB/s)")
    return fault["action"]


def _lost_text(fault: dict) -> str:
    if fault.get("recover") != "restore":
        return f"{fault['lost']:,}"
    return (f"{fault['lost']:,} of those before the backup; {fault['lost_after_backup']:,} of "
            f"{fault['acknowledged_after_backup']:,} after it (the recovery point)")


def _fault_row(run: RunData, fault: dict) -> list[str]:
    if not fault.get("happened"):
        return [run.folder.name, fault["action"], _num(fault["at"], 2), _num(fault["duration"], 2),
                f"not injected: {fault.get('error', '')}", *[""] * 6]
    if fault["action"] == "backup":
        return [run.folder.name, _action_text(fault), _num(fault["into_load_seconds"], 2), "", *[""] * 7]
    return [
        run.folder.name, _action_text(fault), _num(fault["into_load_seconds"], 2), _num(fault["duration"], 2),
        _num(fault["recovery_seconds"], 2) if fault["recovery_seconds"] is not None else "never",
        fault["recovery_by"] or "", _num(fault["startup_seconds"], 2) if fault["startup_seconds"] is not None else "",
        _failed_text(fault), f"{fault['acknowledged_before']:,}", _lost_text(fault), f"{fault['changed']:,}",
    ]


def _fault_rows(groups: list[Group]) -> list[list[str]]:
    """One row per fault of every run (run.json["faults"])."""
    return [_fault_row(r, fault.model_dump()) for g in groups for r in g.runs for fault in r.run.faults or []]


FAULT_NOTE = ("Recovery: from the fault to the answer of the first successful C-STORE sent after it (C-ECHO when "
              "no C-STORE). Failed during outage: requests that ended between the fault and recovery without success (no answer, or a failure status). "
              "Lost: instances acknowledged before the fault that a C-GET after the load did not return "
              "(changed: returned with other bytes). A kill keeps the host's page cache: it tests durability "
              "against a process crash, not a power loss.")


GROWTH_HEADERS = ["target", "run", "series", "first minute", "last minute", "growth per hour [95% CI]", "verdict"]
GROWTH_NOTE = (f"Growth over the measured span (warm-up excluded): Sen's slope of per-minute medians of the "
               f"per-second series, its 95% interval from Kendall's S (which takes minutes as independent); "
               f"'grows' only when the whole interval is above zero. Runs under {MIN_SPAN_SECONDS / 60:g} "
               "minutes get no trend.")


def _growth_rows(data: dict) -> list[list[str]]:
    rows = []
    for group in data["groups"]:
        for run in group.get("growth", []):
            for g in (run.get("series") or {}).values():
                rows.append([group["label"], run["run"], f"{g['what']} ({g['unit']})", _num(g["first_minute"]),
                             _num(g["last_minute"]),
                             f"{g['per_hour']:+.1f} [{g['per_hour_low']:+.1f}, {g['per_hour_high']:+.1f}]"
                             + (f" ({g['per_hour_percent']:+.1f}%)" if g.get("per_hour_percent") else ""),
                             g["verdict"]])
    return rows


def _run_details_html(groups: list[Group]) -> str:
    parts = []
    for g in groups:
        for run, summary in zip(g.runs, g.summaries):
            errors = (
                _html_table(ERROR_HEADERS, _error_rows(summary))
                if summary["errors_by_status"]
                else "<p>No failed requests.</p>"
            )
            per_operation = _html_table(["operation", *BREAKDOWN_HEADERS[1:]], _breakdown_rows(summary["operations"]))
            per_user_type = _html_table(["user type", *BREAKDOWN_HEADERS[1:]], _breakdown_rows(summary["user_types"]))
            parts.append(
                f"<details{' open' if len(groups) == 1 and len(g.runs) == 1 else ''}>"
                f"<summary>{html.escape(f'{run.target}, run {run.folder.name}, repetition {run.repetition}')}</summary>"
                f"<h3>Per operation</h3>{per_operation}<h3>Per user type</h3>{per_user_type}"
                f"<h3>Errors by DICOM status (whole run, warm-up included)</h3>{errors}"
                f"<p>Integrity: {html.escape(_integrity_note(run.run.verify))}</p>"
                f"<p>{html.escape(_measured_note(summary))}</p></details>"
            )
    return "".join(parts)


def render_html(data: dict, groups: list[Group], pictures: list[Picture], title: str,
                run_notes: list[str] = ()) -> str:
    notes = _server_metrics_notes(groups)
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="answer">{html.escape(_answer(data))}</p>',
        *(f'<p class="answer">{html.escape(note)}</p>' for note in run_notes),
        "<h2>Figures per target</h2>",
        _html_table(GROUP_HEADERS, _group_rows(data)),
    ]
    if _optional_metric_rows(data):
        sections += [_html_table(["target", "figure", "value [95% CI]"], _optional_metric_rows(data))]
    if data["ratios"]:
        sections += [
            f"<h2>Against the baseline ({html.escape(data['baseline_target'])})</h2>",
            _html_table(RATIO_HEADERS, _ratio_rows(data)),
        ]
    sections += ["<h2>Figures</h2>", *(_figure(png, alt, caption) for png, alt, caption in pictures)]
    if notes:
        sections += ["<p>" + html.escape("Server metrics: " + "; ".join(notes)) + "</p>"]
    if faults := _fault_rows(groups):
        sections += ["<h2>Faults</h2>", _html_table(FAULT_HEADERS, faults), f"<p>{html.escape(FAULT_NOTE)}</p>"]
    if growth_rows := _growth_rows(data):
        sections += ["<h2>Resource growth</h2>", _html_table(GROWTH_HEADERS, growth_rows),
                     f"<p>{html.escape(GROWTH_NOTE)}</p>"]
    errors = _all_error_rows(groups)
    sections += [
        "<h2>Errors by DICOM status (whole runs)</h2>",
        _html_table(ERROR_SUMMARY_HEADERS, errors) if errors else "<p>No failed requests.</p>",
    ]
    sections += ["<h2>Published claims</h2>"]
    for caption, headers, rows in _claim_tables(data):
        sections += [f"<p>{html.escape(caption)}</p>", _html_table(headers, rows)]
    sections += [
        "<h2>Runs</h2>",
        _run_details_html(groups),
        '<h2>Environment</h2><div class="wide">',
        _html_table(ENV_HEADERS, _environment_rows(data)),
        "</div>",
        "<h2>How the figures were computed</h2>",
        "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in _method_items(data)) + "</ul>",
    ]
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def render_markdown(data: dict, groups: list[Group], title: str, headline: list[list[str]] | None = None,
                    run_notes: list[str] = ()) -> str:
    lines = [f"# {_md_cell(title)}", "", _md_cell(_answer(data)), ""]
    lines += [line for note in run_notes for line in (_md_cell(note), "")]
    if headline:
        lines += _md_table(["metric", "value"], headline)
    lines += _md_table(GROUP_HEADERS, _group_rows(data))
    if data["ratios"]:
        lines += [f"## Against the baseline ({_md_cell(data['baseline_target'])})", ""]
        lines += _md_table(RATIO_HEADERS, _ratio_rows(data))
    if faults := _fault_rows(groups):
        lines += ["## Faults", "", *_md_table(FAULT_HEADERS, faults), _md_cell(FAULT_NOTE), ""]
    if growth_rows := _growth_rows(data):
        lines += ["## Resource growth", "", *_md_table(GROWTH_HEADERS, growth_rows), _md_cell(GROWTH_NOTE), ""]
    errors = _all_error_rows(groups)
    if errors:
        lines += ["## Errors by DICOM status", "", *_md_table(ERROR_SUMMARY_HEADERS, errors)]
    lines += ["## Published claims", ""]
    for caption, headers, rows in _claim_tables(data):
        lines += [_md_cell(caption), "", *_md_table(headers, rows)]
    lines += ["## Environment", "", *_md_table(ENV_HEADERS, _environment_rows(data))]
    lines += [f"- {_md_cell(item)}" for item in _method_items(data)]
    return "\n".join(lines) + "\n"


def _headline_rows(s: dict, data: dict) -> list[list[str]]:
    """The single-run figures, overall (the estimates with intervals are in the target table)."""
    lat = s["latency_ms"]
    return [
        ["instances/s", _num(s["instances_per_s"], 2)],
        ["frames/s", _num(s["frames_per_s"])],
        ["MB/s", _num(s["mb_per_s"])],
        [
            "C-STORE latency p50 / p90 / p95 / p99 / max (ms), every request",
            " / ".join(_num(lat[p]) for p in ("p50", "p90", "p95", "p99", "max"))
            + f" ({lat.get('failed', 0):,} of {lat.get('requests', 0):,} failed)",
        ],
        ["warning statuses (stored, counted above)", f"{s.get('warnings', 0):,}"],
        ["drain (not measured)", _drain_text(s.get("drain") or {})],
        ["acknowledged instances", f"{s['instances']:,}"],
        ["failed requests", f"{s['failures']:,}"],
        ["users / associations", f"{s['users']} / {s['associations']}"],
        ["measured window (s)", f"{_num(s['window_seconds'], 2)} after {_num(s['warmup_seconds'], 2)} s warm-up"],
        ["harness ceiling", _ceiling_notes(data["groups"][0])],
        ["budget", budget_text(data["groups"][0]["budget"])],
        ["bounded by", verdict_text(data["groups"][0]["bound_by"])],
        ["resource growth", growth_text(data["groups"][0]["growth"][0])],
    ]


def _integrity_note(verify: VerifyRecord | None, later: list[VerifyRecord] | None = None) -> str:
    """run.json["verify"] in words (pacsbench verify, or run --verify), and the latest later
    verification (run.json["verify_later"]) when there is one: a loss found later is never hidden."""
    if later:
        first = _integrity_note(verify)
        return f"{_integrity_note(later[-1])} (latest of {len(later) + 1} verifications; the first: {first})"
    if not verify:
        return "not verified (pacsbench run --verify, or pacsbench verify RUN)"
    if verify.ok:
        return f"verified: all {verify.instances:,} acknowledged instances returned byte-identical"
    return (f"VERIFICATION FAILED: {verify.missing} lost, {verify.different} changed, "
            f"{verify.retrieved_different} retrieved changed, of {verify.instances:,} acknowledged")


def _run_notes(run: RunRecord) -> list[str]:
    """What a reader of one run must know before its figures: it stopped early, its archive recycled."""
    notes = []
    status = run.status
    if status.startswith("stopped:"):
        detail = run.disk.stop_detail if run.disk else None
        notes.append(f"Run {status}{f' ({detail})' if detail else ''}: the load ended early; "
                     "the figures cover it up to then.")
    capacity = run.capacity
    if capacity and capacity.at_capacity == "recycle":
        notes.append(f"The archive recycled {capacity.recycled_studies:,} studies "
                     f"({capacity.recycled_instances:,} instances, "
                     f"{capacity.recycled_bytes / 1e9:.2f} GB) at its capacity of "
                     f"{(capacity.capacity_bytes or 0) / 1e9:.2f} GB; recycled studies are excluded from verify.")
    return notes


def _write_outputs(
    folder: Path, data: dict, groups: list[Group], settings: Settings, title: str, json_record: dict, headline=None,
    run_notes: list[str] = (),
) -> Path:
    pictures = _figures(data, groups, settings)
    write_record(folder / SUMMARY_FILE, SummaryRecord.model_validate(json.loads(json.dumps(json_record, default=str))))
    (folder / "summary.md").write_text(render_markdown(data, groups, title, headline, run_notes))
    report = folder / "report.html"
    report.write_text(render_html(data, groups, pictures, title, run_notes), encoding="utf-8")
    return report


def build_report(run_dir: Path, settings: Settings = Settings(), claim_paths: list[Path] | None = None) -> Path:
    """Write summary.json, summary.md and report.html into the run folder; return the HTML path."""
    run = load_run(run_dir)
    data, groups = build_comparison([run], settings, run.target, load_claims(claim_paths))
    summary = groups[0].summaries[0]
    title = f"pacsbench run {run.run.run_id}: {run.scenario}"
    record = {
        "run_id": run.run.run_id,
        "scenario": run.scenario,
        "target": run.target,
        **summary,
        "estimates": data["groups"][0]["estimates"],
        "calibration": data["groups"][0]["calibration"],
        "retrieve_calibration": data["groups"][0]["retrieve_calibration"],
        "budget": data["groups"][0]["budget"],
        "bound_by": data["groups"][0]["bound_by"],
        "growth": data["groups"][0]["growth"][0],
        "claims": data["groups"][0]["claims"],
        "environment": data["environment"][0],
        "integrity": _integrity_note(run.run.verify, run.run.verify_later),
        "status": run.run.status,
        "notes": _run_notes(run.run),
    }
    if run.run.faults is not None:
        record["faults"] = [fault.model_dump(exclude_unset=True) for fault in run.run.faults]
    headline = _headline_rows(summary, data) + [["integrity", record["integrity"]]]
    return _write_outputs(run_dir, data, groups, settings, title, record, headline, record["notes"])


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
    return _write_outputs(folder, data, groups, settings, title, data | {"created": stamp})
