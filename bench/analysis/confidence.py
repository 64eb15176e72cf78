"""Bootstrap confidence intervals over repetitions and time windows.

A figure of one target is the mean, over its repetitions, of a statistic of each
repetition's time windows: the mean of per-window rates for throughput, the quantile of
the pooled latencies for a latency percentile. The bootstrap resamples at both levels
(repetitions with replacement, then windows within each chosen repetition), so an
interval widens with noise between runs as well as within one. Windows are resampled
whole (a block bootstrap): neighbouring requests are not independent. Percentile
intervals from a fixed seed: the same input gives the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 20110101  # fixed: reports are reproducible


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def as_dict(self, digits: int = 4) -> dict:
        return {
            "value": round(self.value, digits),
            "ci_low": round(self.low, digits),
            "ci_high": round(self.high, digits),
        }


def _window_multiplicities(rng: np.random.Generator, windows: int, resamples: int) -> np.ndarray:
    """How often each window is drawn in each replicate (resamples x windows)."""
    picks = rng.integers(0, windows, size=(resamples, windows))
    flat = picks + np.arange(resamples)[:, None] * windows
    return np.bincount(flat.ravel(), minlength=resamples * windows).reshape(resamples, windows)


class WindowMeans:
    """Per-window values (e.g. instances/s of each window); the statistic is their mean."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def __len__(self) -> int:
        return len(self.values)

    def point(self) -> float:
        return float(self.values.mean())

    def replicates(self, rng: np.random.Generator, resamples: int) -> np.ndarray:
        return _window_multiplicities(rng, len(self.values), resamples) @ self.values / len(self.values)

    def to_json(self) -> list:
        return [round(float(v), 6) for v in self.values]


class PooledQuantile:
    """Per-window latency lists; the statistic is quantile `q` of all of them pooled."""

    def __init__(self, windows: list, q: float):
        self.windows = [np.asarray(w, dtype=float) for w in windows if len(w)]
        self.q = q
        values = np.concatenate(self.windows) if self.windows else np.empty(0)
        self._sorted = np.sort(values)
        self._windows_sorted = [np.sort(w) for w in self.windows]

    def __len__(self) -> int:
        return len(self.windows)

    def point(self) -> float:
        return float(np.quantile(self._sorted, self.q, method="inverted_cdf"))

    def replicates(self, rng: np.random.Generator, resamples: int) -> np.ndarray:
        """Quantile of each resample without building it: a binary search over the pooled sorted
        latencies for the smallest one whose weighted count reaches q of the resample's size."""
        weights = _window_multiplicities(rng, len(self.windows), resamples)
        wanted = self.q * (weights @ np.array([len(w) for w in self.windows]))
        low = np.zeros(resamples, dtype=int)
        high = np.full(resamples, len(self._sorted) - 1)
        while np.any(low < high):
            middle = (low + high) // 2
            candidate = self._sorted[middle]
            at_or_below = np.stack([np.searchsorted(w, candidate, side="right") for w in self._windows_sorted], axis=1)
            reached = (weights * at_or_below).sum(axis=1) >= wanted
            high = np.where(reached, middle, high)
            low = np.where(reached, low, middle + 1)
        return self._sorted[low]

    def to_json(self) -> list:
        return [[round(float(v), 3) for v in w] for w in self.windows]


def _nonempty(repetitions: list) -> list:
    return [r for r in repetitions if len(r)]


def point_estimate(repetitions: list) -> float | None:
    repetitions = _nonempty(repetitions)
    return float(np.mean([r.point() for r in repetitions])) if repetitions else None


def bootstrap_replicates(repetitions: list, rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """Replicates of the mean over repetitions, resampling repetitions and, within each, windows."""
    repetitions = _nonempty(repetitions)
    per_repetition = np.stack([r.replicates(rng, resamples) for r in repetitions])
    chosen = rng.integers(0, len(repetitions), size=(resamples, len(repetitions)))
    return per_repetition[chosen, np.arange(resamples)[:, None]].mean(axis=1)


def _bounds(replicates: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    finite = replicates[np.isfinite(replicates)]
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(repetitions: list, level: float = LEVEL) -> Interval | None:
    value = point_estimate(repetitions)
    if value is None:
        return None
    return Interval(value, *_bounds(bootstrap_replicates(repetitions, np.random.default_rng(SEED)), level))


def ratio_interval(repetitions: list, baseline: list, level: float = LEVEL) -> Interval | None:
    """The ratio of two figures (this / baseline) with a bootstrap interval; None if undefined."""
    value, base = point_estimate(repetitions), point_estimate(baseline)
    if value is None or not base:
        return None
    rng = np.random.default_rng(SEED)
    mine, theirs = bootstrap_replicates(repetitions, rng), bootstrap_replicates(baseline, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mine / theirs
    return Interval(value / base, *_bounds(ratios, level))
