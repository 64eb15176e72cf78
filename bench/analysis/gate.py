"""The gate stage: fail a build when a release is slower than its baseline, not when it is noisy.

A metric regresses when both hold:
  - its ratio to the baseline is beyond the threshold (throughput below 1 - t, latency above 1 + t), and
  - the 95% bootstrap interval of that ratio excludes 1 (the change is not noise).
Exit codes: 0 no regression, 1 regression, 2 bad input (UserError) or cannot decide: a run (or
the baseline) too short for an interval (bench.analysis.confidence.MIN_WINDOWS) is no evidence
either way.

A baseline is a small JSON file: per metric the point estimate and the per-window values
(per repetition) the interval needs, with the warm-up and window settings they were cut
with; the gate cuts the new run the same way.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from bench import __version__
from bench.analysis.aggregate import METRICS, Settings, Warmup, measure, metric
from bench.analysis.confidence import Interval, Repetition, point_estimate, ratio_interval
from bench.analysis.runset import RunData, check_completed, load_runs
from bench.common.errors import UserError
from bench.results.record_base import read_record, write_record
from bench.results.records import BaselineMetric, BaselineRecord, BaselineSettings

DEFAULT_METRICS = ["ingest_instances_per_s", "c_store_p95_ms"]
DEFAULT_IF_PRESENT = ["c_find_p95_ms"]
# Saved unless asked otherwise: every throughput and the p95 of each operation (latency
# windows hold raw latencies, so other percentiles are saved only on request).
SAVED_BY_DEFAULT = [name for name, spec in METRICS.items() if spec.quantile in (None, 0.95)]


def parse_threshold(text: str) -> float:
    """'10%' or '0.1' -> 0.1."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not match:
        raise UserError(f"--max-regression {text!r}: expected a percentage such as 10%")
    value = float(match[1]) / (100 if match[2] else 1)
    if not 0 < value < 1:
        raise UserError(f"--max-regression {text!r}: must be between 0% and 100%")
    return value


def _repetitions(runs: list[RunData], settings: Settings, name: str) -> list[Repetition]:
    spec = metric(name)
    return [spec.windows(measure(r.samples, settings, r.stop_at)) for r in runs]


def _present(runs: list[RunData], settings: Settings, name: str) -> bool:
    return any(metric(name).present(measure(r.samples, settings, r.stop_at)) for r in runs)


def baseline_record(runs: list[RunData], settings: Settings, names: list[str] | None = None) -> BaselineRecord:
    names = [n for n in (names or SAVED_BY_DEFAULT) if _present(runs, settings, n)]
    metrics: dict[str, BaselineMetric] = {}
    for name in names:
        repetitions = _repetitions(runs, settings, name)
        value = point_estimate(repetitions)
        if value is None:
            continue  # no successful request of this kind: nothing to hold a release to
        spec = METRICS[name]
        metrics[name] = BaselineMetric(
            label=spec.label,
            unit=spec.unit,
            higher_is_better=spec.higher_is_better,
            value=value,
            repetitions=[r.to_json() for r in repetitions],
        )
    return BaselineRecord(
        pacsbench=__version__,
        scenario=runs[0].scenario,
        runs=[r.folder.name for r in runs],
        targets=sorted({r.target for r in runs}),
        settings=BaselineSettings(warmup_rule=settings.warmup.rule(), window_seconds=settings.window_seconds),
        metrics=metrics,
    )


def save_baseline(paths: list[Path], out: Path, settings: Settings, names: list[str] | None = None) -> Path:
    record = baseline_record(load_runs(paths), settings, names)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_record(out, record, indent=None)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    return out


def load_baseline(path: Path, settings: Settings, include_incomplete: bool = False) -> BaselineRecord:
    """A baseline file, or a run/matrix folder turned into one on the fly."""
    if path.is_dir():
        runs = load_runs([path])
        check_completed(runs, include_incomplete)
        return baseline_record(runs, settings)
    return read_record(BaselineRecord, path, "a pacsbench baseline", missing=f"baseline not found: {path}")


def baseline_settings(record: BaselineRecord) -> Settings:
    return Settings(Warmup.parse(record.settings.warmup_rule), record.settings.window_seconds)


@dataclass(frozen=True)
class Check:
    metric: str
    label: str
    unit: str
    baseline: float
    value: float | None
    ratio: Interval | None
    threshold: float
    regressed: bool
    reason: str
    undecided: bool = False  # too short for an interval: neither pass nor fail

    def line(self) -> str:
        verdict = "CANNOT DECIDE" if self.undecided else "REGRESSION" if self.regressed else "ok"
        if self.ratio is None:
            return f"{verdict} {self.metric}: {self.reason}"
        interval = f"95% CI {self.ratio.low:.3f}-{self.ratio.high:.3f}" if self.ratio.decided else "no interval"
        return (
            f"{verdict} {self.metric}: {self.value:.3f} vs baseline {self.baseline:.3f} {self.unit}, ratio "
            f"{self.ratio.value:.3f} ({interval}); {self.reason}"
        )


def judge(name: str, repetitions: list[Repetition], saved: BaselineMetric, threshold: float) -> Check:
    spec = METRICS[name]
    base_reps = [spec.from_json(w) for w in saved.repetitions]
    value = point_estimate(repetitions)
    ratio = ratio_interval(repetitions, base_reps) if value is not None else None

    def check(regressed: bool, reason: str, undecided: bool = False) -> Check:
        return Check(name, spec.label, spec.unit, saved.value, value, ratio, threshold, regressed, reason, undecided)

    if ratio is None:
        return check(regressed=True, reason="no successful request of this kind in the run")
    if not ratio.decided:
        return check(regressed=False, undecided=True, reason=f"cannot decide: {ratio.evidence.text()}")
    change = (1 - ratio.value) if spec.higher_is_better else (ratio.value - 1)
    beyond = change > threshold
    noise = ratio.contains(1.0)
    word = "worse" if change > 0 else "better" if change < 0 else "unchanged"
    reason = (
        f"{abs(change):.1%} {word}; threshold {threshold:.0%}; "
        + ("the interval includes 1 (within noise)" if noise else "the interval excludes 1")
        + (f"; {ratio.evidence.headline()}" if ratio.evidence.single_run else "")
    )
    return check(regressed=beyond and not noise, reason=reason)


def chosen_metrics(
    requested: list[str] | None, baseline: BaselineRecord, runs: list[RunData], settings: Settings
) -> list[str]:
    if requested:
        names = [metric(n).name for n in requested]
    else:
        names = DEFAULT_METRICS + [n for n in DEFAULT_IF_PRESENT if n in baseline.metrics]
    for name in names:
        if name not in baseline.metrics:
            raise UserError(f"the baseline has no {name} (save it with `pacsbench baseline save RUN --metric {name}`)")
        if not _present(runs, settings, name):
            raise UserError(f"the run has no {', '.join(METRICS[name].operations)} requests for {name}")
    return names


def run_gate(
    paths: list[Path],
    baseline_path: Path,
    threshold: float,
    requested: list[str] | None,
    settings: Settings,
    include_incomplete: bool = False,
) -> list[Check]:
    for name in requested or []:
        metric(name)  # an unknown name fails before any file is read
    runs = load_runs(paths)
    check_completed(runs, include_incomplete)
    baseline = load_baseline(baseline_path, settings, include_incomplete)
    if baseline.scenario != runs[0].scenario:
        raise UserError(f"the run is of scenario {runs[0].scenario!r}, the baseline of {baseline.scenario!r}")
    if not baseline_path.is_dir():
        settings = baseline_settings(baseline)  # cut the run exactly as the baseline was cut
    names = chosen_metrics(requested, baseline, runs, settings)
    return [judge(n, _repetitions(runs, settings, n), baseline.metrics[n], threshold) for n in names]


def write_junit(checks: list[Check], path: Path) -> Path:
    failures = sum(c.regressed for c in checks)
    errors = sum(c.undecided for c in checks)
    suite = ET.Element(
        "testsuite", name="pacsbench gate", tests=str(len(checks)), failures=str(failures), errors=str(errors)
    )
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="pacsbench.gate", name=check.metric)
        if check.undecided:
            ET.SubElement(case, "error", message=check.line(), type="cannot-decide").text = check.line()
        elif check.regressed:
            ET.SubElement(case, "failure", message=check.line(), type="regression").text = check.line()
        else:
            ET.SubElement(case, "system-out").text = check.line()
    suites = ET.Element("testsuites", tests=str(len(checks)), failures=str(failures))
    suites.append(suite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    return path
