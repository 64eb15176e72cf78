"""IOD builders for the modalities beyond DSA: one module per IOD, each with `SOP_CLASS`, `header` and `pixels`.

`header(spec, profile, study, series, instance)` returns a complete data set (with file meta)
without Pixel Data; `pixels(spec, z, rng)` returns the frames (frames, rows, columns[, samples])
of one distinct image at body position z (0..1).
"""

from __future__ import annotations

from types import ModuleType

from bench.studies.iods import breast_tomo, ct, dx, enhanced_ct, enhanced_mr, mr, pet, us

BUILDERS: dict[str, ModuleType] = {
    "ct": ct,
    "enhanced-ct": enhanced_ct,
    "mr": mr,
    "enhanced-mr": enhanced_mr,
    "pet": pet,
    "dx": dx,
    "mg": dx,
    "breast-tomo": breast_tomo,
    "us": us,
}


def builder(iod: str) -> ModuleType:
    """The module that builds `iod` (a SeriesSpec.iod)."""
    return BUILDERS[iod]
