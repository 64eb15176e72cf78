"""Pixel model for synthetic digital subtraction angiography (DSA) runs.

A run is a stack of frames: a static anatomical background with 1/f structure, a
branching vessel tree that a contrast bolus fills and washes out (gamma-variate time
curve), mask frames before the contrast arrives, and quantum noise whose strength is
set by a dose knob. The structure is what makes lossless compression ratios land near
real XA (smooth background, sharp vessel edges, noise in the low bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RunShape:
    """What one synthetic run looks like on disk."""

    rows: int
    columns: int
    frames: int
    bits_stored: int
    mask_frames: int = 2
    dose: float = 400.0  # mean quanta per pixel; higher dose means less noise

    @property
    def bits_allocated(self) -> int:
        return 8 if self.bits_stored <= 8 else 16

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * self.bits_allocated // 8


def _radial_frequency(rows: int, columns: int) -> np.ndarray:
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(columns)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur by multiplying in the frequency domain (no scipy dependency)."""
    f = _radial_frequency(*image.shape)
    kernel = np.exp(-2.0 * (np.pi * sigma * f) ** 2)
    return np.fft.irfft2(np.fft.rfft2(image) * kernel, s=image.shape)


def anatomical_background(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Attenuation map in [0.15, 0.85]: 1/f noise plus a soft elliptical body outline."""
    f = _radial_frequency(rows, columns)
    f[0, 0] = 1.0
    spectrum = rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)
    field = np.fft.irfft2(spectrum / f**1.6, s=(rows, columns))
    field = (field - field.mean()) / (field.std() + 1e-12)
    y, x = np.mgrid[0:rows, 0:columns]
    ellipse = ((y - rows / 2) / (rows * 0.46)) ** 2 + ((x - columns / 2) / (columns * 0.40)) ** 2
    body = 1.0 / (1.0 + np.exp((ellipse - 1.0) * 12.0))
    attenuation = 0.25 + 0.35 * body + 0.08 * field
    return np.clip(attenuation, 0.15, 0.85)


def _grow_centerlines(rng: np.random.Generator, rows: int, columns: int) -> list[tuple[float, float, float]]:
    """Random-walk a branching tree from the top edge; return (y, x, radius) samples."""
    scale = min(rows, columns)
    step = max(scale / 256.0, 0.75)
    # (y, x, heading, radius, remaining length)
    branches = [(rows * 0.05, columns * rng.uniform(0.4, 0.6), np.pi / 2 + rng.normal(0, 0.1), scale * 0.012, scale * 0.6)]
    points = []
    while branches:
        y, x, heading, radius, remaining = branches.pop()
        while remaining > 0 and radius >= 0.5:
            heading += rng.normal(0.0, 0.12)
            y += step * np.sin(heading)
            x += step * np.cos(heading)
            remaining -= step
            if not (0 <= y < rows and 0 <= x < columns):
                break
            points.append((y, x, radius))
            if rng.random() < 0.035 * step:
                side = rng.choice((-1.0, 1.0))
                branches.append((y, x, heading + side * rng.uniform(0.4, 0.9), radius * 0.7, remaining * 0.7))
                radius *= 0.9
    return points


def _disc_offsets(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[inside], dx[inside]], axis=1)


def vessel_tree(rng: np.random.Generator, rows: int, columns: int) -> np.ndarray:
    """Opacity map in [0, 1] of a branching vessel tree grown by random walks.

    Centerline samples are binned by radius and every bin is stamped at once with
    vectorized indexing; thin vessels are drawn first so thicker ones win overlaps.
    """
    scale = min(rows, columns)
    points = np.array(_grow_centerlines(rng, rows, columns) or [(0.0, 0.0, 0.0)])
    radius_bins = 1.25 ** np.arange(-3, 24)
    which = np.digitize(points[:, 2], radius_bins)
    canvas = np.zeros((rows, columns))
    for b in np.unique(which):
        radius = float(radius_bins[min(b, len(radius_bins) - 1)])
        centers = points[which == b, :2].astype(int)
        stamped = centers[:, None, :] + _disc_offsets(radius)[None, :, :]
        ys = np.clip(stamped[..., 0], 0, rows - 1)
        xs = np.clip(stamped[..., 1], 0, columns - 1)
        canvas[ys, xs] = np.maximum(canvas[ys, xs], min(radius / (scale * 0.012), 1.0))
    return np.clip(_gaussian_blur(canvas, sigma=scale / 700.0), 0.0, 1.0)


def bolus_curve(frames: int, mask_frames: int) -> np.ndarray:
    """Contrast concentration per frame: zero over the masks, then a gamma variate."""
    t = np.arange(frames, dtype=np.float64) - mask_frames + 1
    t = np.clip(t, 0.0, None)
    alpha, beta = 2.5, max((frames - mask_frames) / 6.0, 0.5)
    curve = t**alpha * np.exp(-t / beta)
    peak = curve.max()
    return curve / peak if peak > 0 else curve


def synthesize_run(shape: RunShape, seed: int) -> np.ndarray:
    """Return the frames of one run as an array (frames, rows, columns) of uint8/uint16."""
    rng = np.random.default_rng(seed)
    background = anatomical_background(rng, shape.rows, shape.columns)
    vessels = vessel_tree(rng, shape.rows, shape.columns)
    concentration = bolus_curve(shape.frames, shape.mask_frames)
    max_value = (1 << shape.bits_stored) - 1
    dtype = np.uint8 if shape.bits_allocated == 8 else np.uint16
    out = np.empty((shape.frames, shape.rows, shape.columns), dtype=dtype)
    for i, c in enumerate(concentration):
        # Transmitted intensity falls where contrast fills the vessels.
        transmitted = (1.0 - background) * (1.0 - 0.55 * c * vessels)
        noise = rng.standard_normal(transmitted.shape) * np.sqrt(transmitted / shape.dose)
        frame = np.clip((transmitted + noise) * max_value, 0, max_value)
        out[i] = frame.astype(dtype)
    return out
