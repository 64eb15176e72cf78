"""The report stage: aggregate sample rows (pandas) into summary.json, summary.md, report.html.

Figures come from the sample rows only. The measurement window runs from the first
request sent to the last response received; instances/s counts acknowledged instances
(DICOM status 0) in that window. Images per second in PACS talk means instances per
second; frames/s and MB/s (10^6 bytes) are given next to it because a multi-frame
instance can hold anything from one to hundreds of frames.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd

from bench.errors import UserError
from bench.results import RUN_FILE, read_run_json
from bench.samples import COLUMNS, SAMPLES_FILE

PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


def load_samples(run_dir: Path) -> pd.DataFrame:
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    path = run_dir / SAMPLES_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {SAMPLES_FILE} (not a pacsbench run folder, or the run never started)")
    try:
        frame = pd.read_csv(path, dtype={"sop_instance_uid": str, "study_instance_uid": str, "error": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot parse samples: {exc}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing columns {', '.join(missing)}")
    if frame.empty:
        raise UserError(f"{run_dir}: the run has zero samples (no request completed); nothing to report")
    frame["error"] = frame["error"].fillna("")
    frame["end"] = frame["start"] + frame["latency_ms"] / 1000.0
    return frame


def summarize(samples: pd.DataFrame) -> dict:
    """The headline figures of one run."""
    stores = samples[samples["operation"] == "C-STORE"]
    ok = stores[stores["status"] == 0]
    window = float(samples["end"].max() - samples["start"].min())
    seconds = max(window, 1e-9)
    latency = ok["latency_ms"]
    failures = samples[samples["error"] != ""]
    return {
        "window_seconds": round(window, 3),
        "requests": int(len(samples)),
        "instances": int(ok["instances"].sum()),
        "frames": int(ok["frames"].sum()),
        "bytes": int(ok["bytes"].sum()),
        "instances_per_s": round(ok["instances"].sum() / seconds, 3),
        "frames_per_s": round(ok["frames"].sum() / seconds, 3),
        "mb_per_s": round(ok["bytes"].sum() / 1e6 / seconds, 3),
        "latency_ms": {name: (round(float(latency.quantile(q)), 3) if len(latency) else None)
                       for name, q in PERCENTILES.items()}
        | {"max": round(float(latency.max()), 3) if len(latency) else None},
        "failures": int(len(failures)),
        "failures_by_error": {str(k): int(v) for k, v in failures["error"].value_counts().items()},
        "users": int(samples["user"].nunique()),
        "associations": int(samples["association"].nunique()),
    }


def timeline(samples: pd.DataFrame) -> pd.DataFrame:
    """Acknowledged instances, frames and MB per one-second bin of response time."""
    ok = samples[(samples["operation"] == "C-STORE") & (samples["status"] == 0)]
    t0 = samples["start"].min()
    second = ((ok["end"] - t0) // 1).astype(int)
    bins = ok.groupby(second).agg(instances=("instances", "sum"), frames=("frames", "sum"), bytes=("bytes", "sum"))
    full = pd.RangeIndex(0, int((samples["end"].max() - t0) // 1) + 1, name="second")
    bins = bins.reindex(full, fill_value=0)
    bins["mb"] = bins["bytes"] / 1e6
    return bins


def throughput_plot_png(bins: pd.DataFrame, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(9, 3.6), dpi=100)
    left.step(bins.index, bins["instances"], where="post", color="tab:blue", label="instances/s")
    left.set_xlabel("seconds since the first request")
    left.set_ylabel("instances/s", color="tab:blue")
    left.set_ylim(bottom=0)
    right = left.twinx()
    right.step(bins.index, bins["mb"], where="post", color="tab:orange", alpha=0.7, label="MB/s")
    right.set_ylabel("MB/s", color="tab:orange")
    right.set_ylim(bottom=0)
    left.set_title(title)
    left.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _headline_rows(s: dict) -> list[tuple[str, str]]:
    lat = s["latency_ms"]
    return [
        ("instances/s", _fmt(s["instances_per_s"], 2)),
        ("frames/s", _fmt(s["frames_per_s"], 1)),
        ("MB/s", _fmt(s["mb_per_s"], 1)),
        ("C-STORE latency p50 / p95 / p99 (ms)", f"{_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])}"),
        ("acknowledged instances", f"{s['instances']:,}"),
        ("frames / MB stored", f"{s['frames']:,} / {s['bytes'] / 1e6:,.1f}"),
        ("failed requests", f"{s['failures']:,}"),
        ("users / associations", f"{s['users']} / {s['associations']}"),
        ("measurement window (s)", _fmt(s["window_seconds"], 2)),
    ]


def _context_rows(run: dict) -> list[tuple[str, str]]:
    target = run.get("target", {})
    studies = run.get("studies", {})
    host = run.get("host", {})
    load = run.get("scenario", {}).get("load", {})
    where = f"{target.get('host')}:{target.get('port')} AE {target.get('ae_title')}"
    return [
        ("run", str(run.get("run_id"))),
        ("status", str(run.get("status"))),
        ("started (UTC)", str(run.get("started"))),
        ("target", f"{target.get('kind')} {where} {target.get('server', '')}".strip()),
        ("fsync", str(target.get("fsync", "n/a"))),
        ("study profile", f"{studies.get('profile')} (pool of {studies.get('studies')} studies, "
                          f"{studies.get('bytes', 0) / 1e6:.1f} MB, seed {studies.get('seed')})"),
        ("load", f"{load.get('users')} users for {load.get('duration')} s"),
        ("host", f"{host.get('hostname')}: {host.get('cpu_model')}, {host.get('cpus')} CPUs, "
                 f"hypervisor flag {host.get('cpu_hypervisor_flag')}, {host.get('dmi_sys_vendor') or 'no DMI'}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items())),
    ]


def render_markdown(summary: dict, run: dict) -> str:
    lines = [f"# pacsbench run {run.get('run_id')}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _headline_rows(summary)]
    lines += ["", "| context | |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in _context_rows(run)]
    if summary["failures_by_error"]:
        lines += ["", "## Failures", "", "| error | count |", "|---|---|"]
        lines += [f"| {k.replace('|', '/')} | {v} |" for k, v in summary["failures_by_error"].items()]
    return "\n".join(lines) + "\n"


def _html_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def render_html(summary: dict, run: dict, png: bytes) -> str:
    title = html.escape(f"pacsbench run {run.get('run_id')}")
    failures = ""
    if summary["failures_by_error"]:
        failures = "<h2>Failures</h2>" + _html_table([(k, str(v)) for k, v in summary["failures_by_error"].items()])
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ text-align: left; padding: 0.3em 0.8em; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ font-weight: 600; white-space: nowrap; }}
.headline td {{ font-variant-numeric: tabular-nums; }}
</style></head>
<body>
<h1>{title}</h1>
<h2>Throughput and latency (acknowledged C-STOREs)</h2>
<div class="headline">{_html_table(_headline_rows(summary))}</div>
<img alt="throughput over time" src="data:image/png;base64,{image}">
{failures}
<h2>What was measured</h2>
{_html_table(_context_rows(run))}
</body></html>
"""


def build_report(run_dir: Path) -> Path:
    """Write summary.json, summary.md and report.html into the run folder; return the HTML path."""
    samples = load_samples(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        raise UserError(f"{run_dir}: no {RUN_FILE}")
    run = read_run_json(run_dir)
    summary = summarize(samples)
    png = throughput_plot_png(timeline(samples), f"{run.get('scenario', {}).get('name', '')}: throughput over time")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "summary.md").write_text(render_markdown(summary, run))
    report = run_dir / "report.html"
    report.write_text(render_html(summary, run, png), encoding="utf-8")
    return report
