"""Pixel model for synthetic digital subtraction angiography (DSA) runs.

A run is a stack of frames seen through a round field of view: static anatomy (a head
with a skull rim and power-law, 1/f-type texture), a branching vessel tree that a contrast bolus fills
and washes out (gamma-variate time curve), mask frames before the contrast arrives, and
quantum noise set by a dose knob. Pixels are stored as LOG data (proportional to the
attenuation, as DSA units store them so that subtraction removes the anatomy) or LIN
data (proportional to the detected intensity).

The noise is what sets lossless compression ratios: smooth anatomy predicts well, the
noise does not. Noise is drawn from a table of normal quantiles indexed by random 16-bit
integers, several times faster than numpy's normal generator, and the vessels (about a
tenth of the pixels) are updated sparsely, so a 1024x1024 frame costs about 15 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

LOG_RANGE = 5.0  # attenuation (in e-folds) spanned by the stored LOG range: 150:1 in intensity
FIELD_OF_VIEW = 0.48  # radius of the round field of view, as a fraction of the smaller side


@dataclass(frozen=True)
class RunShape:
    """What one synthetic run looks like on disk."""

    rows: int
    columns: int
    frames: int
    bits_stored: int
    mask_frames: int = 2
    dose: float = 1000.0  # quanta per pixel where nothing attenuates; more dose, less noise
    intensity: str = "LOG"  # LOG: value ~ attenuation; LIN: value ~ detected intensity

    @property
    def bits_allocated(self) -> int:
        return 8 if self.bits_stored <= 8 else 16

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.bits_allocated // 8

    @property
    def max_value(self) -> int:
        return (1 << self.bits_stored) - 1


def radial_frequency(rows: int, columns: int) -> np.ndarray:
    fy = np.fft.fftfreq(rows)[:, None].astype(np.float32)
    fx = np.fft.rfftfreq(columns)[None, :].astype(np.float32)
    return np.sqrt(fx * fx + fy * fy)


def binomial_blur(image: np.ndarray, passes: int) -> np.ndarray:
    """Blur with a separable [1, 2, 1]/4 kernel `passes` times (sigma ~ 0.7 px per pass)."""
    out = image
    for _ in range(passes):
        p = np.pad(out, ((1, 1), (0, 0)), mode="edge")
        out = (p[:-2] + 2 * p[1:-1] + p[2:]) * 0.25
        p = np.pad(out, ((0, 0), (1, 1)), mode="edge")
        out = (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) * 0.25
    return out


@lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """65536 quantiles of the standard normal: indexing it with random uint16 draws noise."""
    quantiles = NormalDist().inv_cdf
    return np.array([quantiles((i + 0.5) / 65536) for i in range(65536)], dtype=np.float32)


def _random_uint16(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` uniform random uint16: raw 64-bit draws, twice as fast as rng.integers."""
    words = rng.bit_generator.random_raw((count + 3) // 4)
    return words.view(np.uint16)[:count]


def normal_noise(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` standard normal float32 draws (quantized to 65536 levels)."""
    return _normal_table()[_random_uint16(rng, count)]


def field_of_view(rows: int, columns: int) -> np.ndarray:
    """True inside the round field of view (the image intensifier's circle)."""
    y, x = np.ogrid[0:rows, 0:columns]
    y, x = y.astype(np.float32), x.astype(np.float32)
    radius = FIELD_OF_VIEW * min(rows, columns)
    return (y - rows / 2 + 0.5) ** 2 + (x - columns / 2 + 0.5) ** 2 <= radius * radius


def anatomical_attenuation(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Attenuation (e-folds) of a head: soft tissue, a skull rim and 1/f texture."""
    f = radial_frequency(rows, columns)
    f[0, 0] = 1.0
    spectrum = np.empty(f.shape, dtype=np.complex64)
    spectrum.real = normal_noise(rng, f.size).reshape(f.shape)
    spectrum.imag = normal_noise(rng, f.size).reshape(f.shape)
    spectrum /= f**1.5
    texture = np.fft.irfft2(spectrum, s=(rows, columns)).astype(np.float32)
    texture = (texture - texture.mean()) / (texture.std() + 1e-12)
    y, x = np.ogrid[0:rows, 0:columns]
    y, x = y.astype(np.float32), x.astype(np.float32)
    ellipse = np.sqrt(((y - rows * 0.52) / (rows * 0.42)) ** 2 + ((x - columns / 2) / (columns * 0.36)) ** 2)
    head = 1.0 / (1.0 + np.exp((ellipse - 1.0) * 25.0))
    skull = np.exp(-(((ellipse - 0.94) / 0.035) ** 2))
    attenuation = 0.6 + 1.6 * head + 0.9 * skull + 0.22 * texture
    return np.clip(attenuation, 0.2, LOG_RANGE - 0.3).astype(np.float32)


BRANCH_CHANCE = 0.015  # per pixel of vessel length


def _walk_branch(rng, start, step: float, shape: tuple[int, int], branches: list, points: list) -> None:
    """Walk one vessel from `start`, vectorized; queue the side branches it sprouts."""
    y, x, heading, radius, length = start
    n = max(int(length / step), 1)
    turns, chances = rng.normal(0.0, 0.12, n), rng.random(n)
    headings = heading + np.cumsum(turns)
    ys = y + step * np.cumsum(np.sin(headings))
    xs = x + step * np.cumsum(np.cos(headings))
    forks = chances < BRANCH_CHANCE * step
    radii = radius * 0.9 ** np.cumsum(forks)  # a vessel narrows at every fork
    keep = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1]) & (radii >= 0.5)
    end = n if keep.all() else int(np.argmin(keep))
    points.append((ys[:end], xs[:end], radii[:end]))
    at = np.flatnonzero(forks[:end])
    # A side branch leaves at 0.4-0.9 rad to either side (the fork's chance draw picks the side).
    sides = np.where(chances[at] < BRANCH_CHANCE * step / 2, -1.0, 1.0) * rng.uniform(0.4, 0.9, at.size)
    for k, side in zip(at.tolist(), sides.tolist()):
        branches.append((ys[k], xs[k], headings[k] + side, radii[k] / 0.9 * 0.7, (n - k) * step * 0.7))


def _grow_centerlines(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Random-walk a branching tree from the bottom edge; return (y, x, radius) samples."""
    scale = min(rows, columns)
    step = max(scale / 256.0, 0.75)
    # (y, x, heading, radius, length): the feeding artery enters from below.
    branches = [
        (rows * 0.95, columns * rng.uniform(0.4, 0.6), -np.pi / 2 + rng.normal(0, 0.1), scale * 0.012, scale * 0.8)
    ]
    points: list[np.ndarray] = []
    while branches:
        _walk_branch(rng, branches.pop(), step, (rows, columns), branches, points)
    return np.stack([np.concatenate(column) for column in zip(*points)], axis=1)


def _disc_offsets(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1)


def vessel_tree(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Opacity map in [0, 1] of a branching vessel tree grown by random walks.

    Centerline samples are binned by radius and every bin is stamped as discs at once
    with vectorized indexing; thicker vessels hold more iodine, so they are more opaque.
    """
    scale = min(rows, columns)
    points = _grow_centerlines(rng, rows, columns)
    radius_bins = 1.25 ** np.arange(-3, 24)
    which = np.digitize(points[:, 2], radius_bins)
    canvas = np.zeros((rows, columns), dtype=np.float32)
    step = max(scale / 256.0, 0.75)
    for b in np.unique(which):  # ascending radius: thicker vessels are stamped last and win
        radius = float(radius_bins[min(b, len(radius_bins) - 1)])
        # Discs half a radius apart leave no visible scallops; closer ones are redundant.
        centers = points[which == b, :2].astype(int)[:: max(1, int(radius / (2 * step)))]
        stamped = centers[:, None, :] + _disc_offsets(radius)[None, :, :]
        ys = np.clip(stamped[..., 0], 0, rows - 1)
        xs = np.clip(stamped[..., 1], 0, columns - 1)
        canvas[ys, xs] = min(0.25 + radius / (scale * 0.012), 1.0)
    return np.clip(binomial_blur(canvas, passes=1), 0.0, 1.0)


def bolus_curve(frames: int, mask_frames: int) -> np.ndarray:
    """Contrast concentration per frame: zero over the masks, then a gamma variate."""
    t = np.arange(frames, dtype=np.float64) - mask_frames + 1
    t = np.clip(t, 0.0, None)
    alpha, beta = 2.5, max((frames - mask_frames) / 6.0, 0.5)
    curve = t**alpha * np.exp(-t / beta)
    peak = curve.max()
    return curve / peak if peak > 0 else curve


IODINE_ATTENUATION = 0.7  # extra e-folds through the thickest vessel at peak contrast


class _Exposure:
    """Mean and noise of the detector signal for one run, in stored-value units, flattened.

    Frames are built flat so the vessel pixels (the only ones contrast changes) can be
    updated through an index array.
    """

    def __init__(self, shape: RunShape, attenuation: np.ndarray, inside: np.ndarray, vessels: np.ndarray):
        self.log = shape.intensity == "LOG"
        top = shape.max_value
        if self.log:
            self.gain = top / LOG_RANGE  # stored units per e-fold of attenuation
            mean = top - self.gain * attenuation
            sigma = self.gain * np.exp(attenuation / 2) / math.sqrt(shape.dose)
        else:
            mean = top * np.exp(-attenuation)
            sigma = top * np.exp(-attenuation / 2) / math.sqrt(shape.dose)
        # Outside the field of view the detector sees nothing: a constant black.
        self.mean = ((mean + 0.5) * inside).ravel()  # +0.5: the final cast truncates, this rounds
        self.sigma = (sigma * inside).ravel()
        self.vessel_pixels = np.flatnonzero((vessels > 0.01) & inside)
        self.iodine = vessels.ravel()[self.vessel_pixels] * np.float32(IODINE_ATTENUATION)
        self.vessel_mean = self.mean[self.vessel_pixels]
        self.vessel_sigma = self.sigma[self.vessel_pixels]

    def vessels_with_contrast(self, concentration: float, noise: np.ndarray) -> np.ndarray:
        """Values of the vessel pixels when iodine at `concentration` adds attenuation."""
        extra = self.iodine * np.float32(concentration)
        if self.log:
            return self.vessel_mean - self.gain * extra + self.vessel_sigma * np.exp(extra / 2) * noise
        return self.vessel_mean * np.exp(-extra) + self.vessel_sigma * np.exp(-extra / 2) * noise


def synthesize_run(shape: RunShape, seed: int) -> np.ndarray:
    """Return the frames of one run as an array (frames, rows, columns) of uint8/uint16."""
    rng = np.random.default_rng(seed)
    inside = field_of_view(shape.rows, shape.columns)
    attenuation = anatomical_attenuation(rng, shape.rows, shape.columns)
    exposure = _Exposure(shape, attenuation, inside, vessel_tree(rng, shape.rows, shape.columns))
    dtype = np.uint8 if shape.bits_allocated == 8 else np.uint16
    out = np.empty((shape.frames, shape.rows * shape.columns), dtype=dtype)
    frame = np.empty(shape.rows * shape.columns, dtype=np.float32)
    for i, concentration in enumerate(bolus_curve(shape.frames, shape.mask_frames)):
        noise = normal_noise(rng, frame.size)
        np.multiply(noise, exposure.sigma, out=frame)
        frame += exposure.mean
        if concentration > 0:
            frame[exposure.vessel_pixels] = exposure.vessels_with_contrast(concentration, noise[exposure.vessel_pixels])
        np.clip(frame, 0, shape.max_value, out=out[i], casting="unsafe")  # clip and cast in one pass
    return out.reshape(shape.frames, shape.rows, shape.columns)
