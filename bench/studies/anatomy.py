"""Pixel model for the modalities beyond DSA: one body phantom, seen as slices, projections or a cine sector.

The DSA generator's approach (bench.studies.pixels) carried over: smooth structure that a
lossless coder predicts well, power-law (1/f-type) texture, and noise that it cannot, so
compression ratios land where real images do. One phantom serves every modality:

- cross sections (CT, MR, PET): a body ellipse with a fat rim, lungs, heart, liver, spine and a
  few lesions, each tissue with its value per contrast (CT Hounsfield units, MR T1/T2/diffusion
  signal, PET uptake); the organs follow the slice position `z` (0: feet end, 1: head end);
- projections (DX, MG): a chest radiograph (lungs, ribs, spine, mediastinum) or a compressed
  breast (fibroglandular texture with the steep power spectrum of mammograms);
- a cine sector (US): speckle in a fan with a beating dark chamber.

Values come out as float32 in the contrast's own units; the IOD builders scale, add the
noise their modality has, and cast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bench.studies.pixels import binomial_blur, normal_noise, radial_frequency


@dataclass(frozen=True)
class Tissue:
    """Values of one tissue in each cross-sectional contrast."""

    ct: float  # Hounsfield units
    t1: float  # relative MR signal, 0..1
    t2: float
    dwi: float
    pet: float  # standardized uptake value


AIR = Tissue(ct=-1000, t1=0.0, t2=0.0, dwi=0.0, pet=0.0)
FAT = Tissue(ct=-100, t1=0.9, t2=0.7, dwi=0.05, pet=0.3)
MUSCLE = Tissue(ct=45, t1=0.45, t2=0.3, dwi=0.3, pet=0.8)
LUNG = Tissue(ct=-850, t1=0.05, t2=0.05, dwi=0.02, pet=0.4)
BLOOD = Tissue(ct=160, t1=0.3, t2=0.9, dwi=0.15, pet=2.0)  # contrast-enhanced blood pool
LIVER = Tissue(ct=60, t1=0.55, t2=0.25, dwi=0.4, pet=2.5)
BONE = Tissue(ct=700, t1=0.6, t2=0.5, dwi=0.1, pet=1.0)
LESION = Tissue(ct=30, t1=0.35, t2=0.8, dwi=0.9, pet=8.0)
CONTRASTS = ("ct", "t1", "t2", "dwi", "pet")


def power_law_texture(rng: np.random.Generator, rows: int, columns: int, exponent: float) -> np.ndarray:
    """Zero-mean, unit-variance texture whose power falls as 1/f**(2*exponent)."""
    f = radial_frequency(rows, columns)
    f[0, 0] = 1.0
    spectrum = np.empty(f.shape, dtype=np.complex64)
    spectrum.real = normal_noise(rng, f.size).reshape(f.shape)
    spectrum.imag = normal_noise(rng, f.size).reshape(f.shape)
    spectrum /= f**exponent
    texture = np.fft.irfft2(spectrum, s=(rows, columns)).astype(np.float32)
    return (texture - texture.mean()) / (texture.std() + 1e-12)


@lru_cache(maxsize=4)
def _grid(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) in units of the smaller half-side, centred: -1..1 across the smaller dimension."""
    half = min(rows, columns) / 2
    y = (np.arange(rows, dtype=np.float32) - rows / 2 + 0.5) / half
    x = (np.arange(columns, dtype=np.float32) - columns / 2 + 0.5) / half
    return y[:, None], x[None, :]


def _ellipse(y, x, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _organs(z: float, y, x) -> list[tuple[np.ndarray, Tissue]]:
    """The tissues of the slice at `z`, painted in order (later ones win)."""
    body_rx, body_ry = 0.82 - 0.25 * max(z - 0.8, 0) * 5, 0.58
    body = _ellipse(y, x, 0.05, 0.0, body_ry, max(body_rx, 0.35))
    inner = _ellipse(y, x, 0.05, 0.0, body_ry - 0.06, max(body_rx, 0.35) - 0.06)
    parts = [(body, FAT), (inner, MUSCLE)]
    chest = 0.45 < z < 0.8  # lungs and heart; below them the liver
    if chest:
        lung = 0.3 * math.sin((z - 0.45) / 0.35 * math.pi) + 0.12
        parts += [(_ellipse(y, x, -0.02, s * 0.33, lung * 1.3, lung), LUNG) for s in (-1, 1)]
        parts.append((_ellipse(y, x, 0.05, 0.08, 0.18, 0.16), BLOOD))
    elif 0.3 < z <= 0.45:
        parts.append((_ellipse(y, x, 0.0, -0.2, 0.33, 0.38), LIVER))
    parts.append((_ellipse(y, x, 0.42, 0.0, 0.1, 0.09), BONE))  # vertebral body
    parts.append((_ellipse(y, x, 0.2, 0.25, 0.045, 0.045), BLOOD))  # aorta
    spot = (z * 7.3) % 1.0  # a lesion comes and goes along z
    if spot < 0.35:
        parts.append((_ellipse(y, x, -0.1 + 0.3 * spot, 0.3 - spot, 0.05, 0.05), LESION))
    return parts


def cross_section(
    contrast: str, rows: int, columns: int, z: float, rng: np.random.Generator, texture_amount: float
) -> np.ndarray:
    """A slice at `z` (0..1) in `contrast` units (see Tissue), with texture; no noise yet."""
    y, x = _grid(rows, columns)
    image = np.full((rows, columns), getattr(AIR, contrast), dtype=np.float32)
    for mask, tissue in _organs(z, y, x):
        image[mask] = getattr(tissue, contrast)
    body = image != getattr(AIR, contrast)
    texture = power_law_texture(rng, rows, columns, 1.2)
    image += texture_amount * texture * body
    return binomial_blur(image, passes=1)


def add_noise(image: np.ndarray, sigma: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """The image plus Gaussian noise of `sigma` (a scalar or per pixel)."""
    return image + normal_noise(rng, image.size).reshape(image.shape) * np.float32(sigma)


def coarse_texture(rng: np.random.Generator, rows: int, columns: int, exponent: float) -> np.ndarray:
    """power_law_texture drawn at half resolution and doubled: a steep power law has almost nothing at the finest
    scale, and the FFT of a 4k x 3k projection costs four times less (the noise added later is per pixel)."""
    half = power_law_texture(rng, (rows + 1) // 2, (columns + 1) // 2, exponent)
    return np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)[:rows, :columns]


def _soft_inside(outline: np.ndarray, sharpness: float) -> np.ndarray:
    """1 inside an outline (value < 1), 0 outside, with a soft edge; exp's argument clipped (no overflow)."""
    return 1.0 / (1.0 + np.exp(np.clip((outline - 1.0) * sharpness, -50.0, 50.0)))


def chest_radiograph(rows: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """Attenuation 0..1 of a PA chest: mediastinum and spine bright, lungs dark, ribs as arcs."""
    y, x = _grid(rows, columns)
    body = _soft_inside(np.abs(x) / 0.85, 25.0)
    lungs = sum(_soft_inside(((y + 0.05) / 0.55) ** 2 + ((x - s * 0.38) / 0.28) ** 2, 6.0) for s in (-1, 1))
    ribs = 0.5 + 0.5 * np.cos((y + 0.25 * x * x) * 18.0)
    spine = np.exp(-((x / 0.07) ** 2))
    image = 0.25 + 0.45 * body - 0.35 * lungs + 0.08 * ribs * lungs + 0.25 * spine * body
    image += 0.03 * coarse_texture(rng, rows, columns, 1.3)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def breast_projection(rows: int, columns: int, rng: np.random.Generator, right: bool) -> np.ndarray:
    """Attenuation 0..1 of a compressed breast against the chest wall (left or right edge); 0 outside.

    Fibroglandular tissue has a power spectrum falling about as 1/f**3 (Burgess et al.,
    Med Phys 2001), hence the exponent 1.5 on the amplitude.
    """
    yy = (np.arange(rows, dtype=np.float32) / rows - 0.5)[:, None]
    xx = (np.arange(columns, dtype=np.float32) / columns)[None, :]
    depth = (1.0 - xx) if not right else xx  # distance from the chest wall
    outline = (depth / 0.75) ** 2 + (yy / 0.42) ** 2
    breast = _soft_inside(outline, 40.0)
    dense = np.clip(coarse_texture(rng, rows, columns, 1.5) * 0.5 + 0.2 * (1 - depth), -1.0, 1.0)
    image = breast * (0.45 + 0.12 * dense) + 0.03 * breast * (outline > 0.9)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


class UltrasoundLoop:
    """Echo amplitude 0..1 in a sector (a fan from the top centre) with a chamber beating over the loop.

    The speckle pattern is drawn once per loop and moves with the tissue (a shift of a few pixels
    over a beat), as real speckle does between frames; each frame adds its own electronic noise.
    """

    def __init__(self, rows: int, columns: int, rng: np.random.Generator):
        self.rng = rng
        y = np.arange(rows, dtype=np.float32)[:, None] / rows
        x = (np.arange(columns, dtype=np.float32)[None, :] - columns / 2) / rows
        self.y, self.x = y, x
        radius = np.sqrt(y * y + x * x)
        self.sector = ((radius > 0.05) & (radius < 0.95) & (np.abs(np.arctan2(x, y)) < 0.65)).astype(np.float32)
        tissue = (0.45 + 0.1 * np.cos(radius * 40.0) - 0.2 * radius) * self.sector
        real, imaginary = (normal_noise(rng, rows * columns).reshape(rows, columns) for _ in range(2))
        self.echo = binomial_blur(tissue * np.sqrt(real * real + imaginary * imaginary) * 0.6, passes=1)

    def frame(self, phase: float) -> np.ndarray:
        """The frame at `phase` (0..1 of the beat)."""
        shift = int(round(3 * math.sin(2 * math.pi * phase)))
        beat = 0.12 + 0.04 * math.sin(2 * math.pi * phase)
        chamber = ((self.y - 0.5) / (beat * 1.6)) ** 2 + ((self.x - 0.02) / beat) ** 2 < 1.0
        image = np.roll(self.echo, shift, axis=0) * ~chamber + 0.03 * self.sector
        image = add_noise(image, 0.02, self.rng) * self.sector
        return np.clip(image, 0.0, 1.0)
