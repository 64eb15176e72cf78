"""Bootstrap confidence intervals over repetitions and time windows, each stating its evidence.

A figure of one target is the mean, over its repetitions, of a statistic of each
repetition's time windows: the mean of per-window rates for throughput, the quantile of
the pooled latencies for a latency percentile. Run-to-run variation can only come from
repetitions: with several, the bootstrap resamples repetitions with replacement and then
windows within each chosen one; with one, it resamples that run's windows only, and the
interval says "single run: no run-to-run estimate". Windows are resampled in moving blocks
(neighbouring windows are not independent): the block length is the first lag at which the
series' autocorrelation falls below 1/e (at least 1, at most a third of the series). A
repetition with fewer than MIN_WINDOWS full windows gives no interval at all ("too short").
Percentile intervals from a fixed seed: the same input gives the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

RESAMPLES = 2000
LEVEL = 0.95
SEED = 20110101  # fixed: reports are reproducible
MIN_WINDOWS = 10  # fewer full windows in a repetition: too few blocks to say anything about noise
SINGLE_RUN = "single run: no run-to-run estimate"
TOO_SHORT = "too short"
METHOD = (
    f"percentile, {RESAMPLES} resamples, {LEVEL:.0%}: repetitions resampled when there are several (run-to-run "
    "variation), windows within each in moving blocks (length: first lag where the windows' autocorrelation "
    f"falls below 1/e); no interval with fewer than {MIN_WINDOWS} full windows in a repetition"
)


def block_length(series: npt.ArrayLike) -> int:
    """The first lag at which the autocorrelation of `series` falls below 1/e; 1 to len/3."""
    x = np.asarray(series, dtype=float)
    cap = max(1, len(x) // 3)  # a resample needs at least three blocks to vary at all
    x = x - x.mean()
    variance = float(x @ x)
    if len(x) < 3 or variance == 0:
        return 1
    for lag in range(1, cap + 1):
        if float(x[:-lag] @ x[lag:]) / variance < 1 / np.e:
            return lag
    return cap


@dataclass(frozen=True)
class Evidence:
    """What an interval rests on: how many repetitions, the fewest full windows in one, the block length."""

    repetitions: int
    windows: int
    block: int

    @property
    def too_short(self) -> bool:
        return self.windows < MIN_WINDOWS

    @property
    def single_run(self) -> bool:
        return self.repetitions == 1

    @property
    def kind(self) -> str:
        return TOO_SHORT if self.too_short else SINGLE_RUN if self.single_run else "repetitions"

    def headline(self) -> str:
        """The short form a reader must see beside a single-run or too-short figure."""
        if self.too_short:
            return f"{TOO_SHORT}: fewer than {MIN_WINDOWS} full windows in a repetition, no interval"
        return SINGLE_RUN if self.single_run else ""

    def text(self) -> str:
        if self.too_short:
            return (
                f"{TOO_SHORT}: {self.windows} full window{'s' if self.windows != 1 else ''} in a repetition, "
                f"at least {MIN_WINDOWS} needed for an interval"
            )
        blocks = f"windows resampled in blocks of {self.block}"
        if self.single_run:
            return f"{SINGLE_RUN} ({self.windows} windows, {blocks})"
        return f"{self.repetitions} repetitions resampled (run-to-run), {blocks}"

    def weaker(self, other: "Evidence") -> "Evidence":
        return Evidence(
            min(self.repetitions, other.repetitions), min(self.windows, other.windows), max(self.block, other.block)
        )


class IntervalFigures(TypedDict):
    """An interval as summary.json and the report's tables hold it (Interval.as_dict)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    evidence: str
    evidence_kind: str


@dataclass(frozen=True)
class Interval:
    """A figure and its 95% interval; low and high are None when the evidence is too short for one."""

    value: float
    low: float | None
    high: float | None
    evidence: Evidence

    @property
    def decided(self) -> bool:
        return self.low is not None and self.high is not None

    def contains(self, x: float) -> bool:
        return self.low is not None and self.high is not None and self.low <= x <= self.high

    def as_dict(self, digits: int = 4) -> IntervalFigures:
        def rounded(v: float | None) -> float | None:
            return None if v is None else round(v, digits)

        return {
            "value": round(self.value, digits),
            "ci_low": rounded(self.low),
            "ci_high": rounded(self.high),
            "evidence": self.evidence.text() if self.evidence else "",
            "evidence_kind": self.evidence.kind if self.evidence else "",
        }


def _window_multiplicities(rng: np.random.Generator, windows: int, resamples: int, block: int = 1) -> np.ndarray:
    """How often each window is drawn in each replicate (resamples x windows), in moving blocks of `block`."""
    block = max(1, min(block, windows))
    starts = rng.integers(0, windows - block + 1, size=(resamples, -(-windows // block)))
    picks = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :windows]
    flat = picks + np.arange(resamples)[:, None] * windows
    return np.bincount(flat.ravel(), minlength=resamples * windows).reshape(resamples, windows)


class WindowMeans:
    """Per-window values (e.g. instances/s of each window); the statistic is their mean."""

    def __init__(self, values: npt.ArrayLike):
        self.values = np.asarray(values, dtype=float)
        self.block = block_length(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def has_values(self) -> bool:
        return len(self.values) > 0

    def point(self) -> float:
        return float(self.values.mean())

    def replicates(self, rng: np.random.Generator, resamples: int) -> np.ndarray:
        weights = _window_multiplicities(rng, len(self.values), resamples, self.block)
        means: np.ndarray = weights @ self.values / len(self.values)
        return means

    def to_json(self) -> list[float]:
        return [round(float(v), 6) for v in self.values]


class PooledQuantile:
    """Per-window latency lists (empty ones included: they are windows too); the statistic is
    quantile `q` of all of them pooled."""

    def __init__(self, windows: Sequence[npt.ArrayLike], q: float):
        self.windows = [np.asarray(w, dtype=float) for w in windows]
        self.q = q
        values = np.concatenate(self.windows) if self.windows else np.empty(0)
        self._sorted = np.sort(values)
        self._windows_sorted = [np.sort(w) for w in self.windows]
        mean = float(values.mean()) if len(values) else 0.0
        self.block = block_length([w.mean() if len(w) else mean for w in self.windows])

    def __len__(self) -> int:
        return len(self.windows)

    def has_values(self) -> bool:
        return len(self._sorted) > 0

    def point(self) -> float:
        return float(np.quantile(self._sorted, self.q, method="inverted_cdf"))

    def replicates(self, rng: np.random.Generator, resamples: int) -> np.ndarray:
        """Quantile of each resample without building it: a binary search over the pooled sorted
        latencies for the smallest one whose weighted count reaches q of the resample's size."""
        weights = _window_multiplicities(rng, len(self.windows), resamples, self.block)
        sizes = weights @ np.array([len(w) for w in self.windows])
        wanted = self.q * sizes
        low = np.zeros(resamples, dtype=int)
        high = np.full(resamples, len(self._sorted) - 1)
        while np.any(low < high):
            middle = (low + high) // 2
            candidate = self._sorted[middle]
            at_or_below = np.stack([np.searchsorted(w, candidate, side="right") for w in self._windows_sorted], axis=1)
            reached = (weights * at_or_below).sum(axis=1) >= wanted
            high = np.where(reached, middle, high)
            low = np.where(reached, low, middle + 1)
        quantiles: np.ndarray = np.where(sizes > 0, self._sorted[low], np.nan)  # empty windows have no quantile
        return quantiles

    def to_json(self) -> list[list[float]]:
        return [[round(float(v), 3) for v in w] for w in self.windows]


# One repetition's per-window values, with the statistic a figure takes of them.
Repetition = WindowMeans | PooledQuantile


def _nonempty(repetitions: Sequence[Repetition]) -> list[Repetition]:
    return [r for r in repetitions if r.has_values()]


def point_estimate(repetitions: Sequence[Repetition]) -> float | None:
    kept = _nonempty(repetitions)
    return float(np.mean([r.point() for r in kept])) if kept else None


def evidence_of(repetitions: Sequence[Repetition]) -> Evidence:
    kept = _nonempty(repetitions)
    return Evidence(len(kept), min(len(r) for r in kept), max(r.block for r in kept))


def bootstrap_replicates(
    repetitions: Sequence[Repetition], rng: np.random.Generator, resamples: int = RESAMPLES
) -> np.ndarray:
    """Replicates of the mean over repetitions: repetitions resampled (when several), windows within each."""
    kept = _nonempty(repetitions)
    per_repetition = np.stack([r.replicates(rng, resamples) for r in kept])
    if len(kept) == 1:
        only: np.ndarray = per_repetition[0]
        return only
    chosen = rng.integers(0, len(kept), size=(resamples, len(kept)))
    means: np.ndarray = per_repetition[chosen, np.arange(resamples)[:, None]].mean(axis=1)
    return means


def _bounds(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    finite = replicates[np.isfinite(replicates)]
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(repetitions: Sequence[Repetition], level: float = LEVEL) -> Interval | None:
    value = point_estimate(repetitions)
    if value is None:
        return None
    evidence = evidence_of(repetitions)
    if evidence.too_short:
        return Interval(value, None, None, evidence)
    replicates = bootstrap_replicates(repetitions, np.random.default_rng(SEED))
    return Interval(value, *_bounds(replicates, level), evidence)


def ratio_interval(
    repetitions: Sequence[Repetition], baseline: Sequence[Repetition], level: float = LEVEL
) -> Interval | None:
    """The ratio of two figures (this / baseline) with a bootstrap interval; None if undefined."""
    value, base = point_estimate(repetitions), point_estimate(baseline)
    if value is None or not base:
        return None
    evidence = evidence_of(repetitions).weaker(evidence_of(baseline))
    if evidence.too_short:
        return Interval(value / base, None, None, evidence)
    rng = np.random.default_rng(SEED)
    mine, theirs = bootstrap_replicates(repetitions, rng), bootstrap_replicates(baseline, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mine / theirs
    return Interval(value / base, *_bounds(ratios, level), evidence)
