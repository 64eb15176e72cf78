"""Study profiles: TOML data describing what a modality's studies look like."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.common.errors import UserError
from bench.common.tomlfile import load_model
from bench.studies.encode import DEFAULT_SYNTAX, LOSSLESS, SYNTAXES

PROFILE_DIR = Path(__file__).parent / "profiles"


class IntRange(BaseModel):
    """Whole numbers from min to max; uniform, or skewed towards `mean` when it is given."""

    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=1)
    max: int = Field(ge=1)
    mean: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is smaller than min ({self.min})")
        if self.mean is not None and not self.min <= self.mean <= self.max:
            raise ValueError(f"mean ({self.mean:g}) is outside min..max ({self.min}..{self.max})")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        """One value. With a mean: min + (max - min) * Beta, rounded, where the Beta
        distribution has that mean and a broad spread (a + b = 4), so sizes scatter widely
        around the mean with a long tail on the far side, as real study sizes do."""
        span = self.max - self.min
        if span == 0:
            return self.min
        if self.mean is None:
            return int(rng.integers(self.min, self.max + 1))
        share = min(max((self.mean - self.min) / span, 0.01), 0.99)
        return self.min + int(round(rng.beta(4 * share, 4 * (1 - share)) * span))


class Profile(BaseModel):
    """One kind of study: frame geometry, bit depth and how big studies get."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    description: str = ""
    rows: int = Field(ge=16, le=4096)
    columns: int = Field(ge=16, le=4096)
    bits_stored: int = Field(ge=8, le=16)
    frame_rate: float = Field(gt=0, le=60)
    body_part: str = "HEAD"
    mask_frames: int = Field(default=2, ge=1)
    dose: float = Field(
        default=1000.0,
        gt=0,
        description="quanta per pixel where nothing attenuates: less dose, more noise, lower compression ratios",
    )
    pixel_intensity_relationship: Literal["LOG", "LIN"] = "LOG"
    transfer_syntax: Literal[tuple(LOSSLESS)] = DEFAULT_SYNTAX  # type: ignore[valid-type]
    runs_per_study: IntRange
    frames_per_run: IntRange
    studies_per_patient: IntRange = IntRange(min=1, max=1)

    @model_validator(mode="after")
    def _masks_fit(self) -> "Profile":
        if self.frames_per_run.min <= self.mask_frames:
            raise ValueError("frames_per_run.min must exceed mask_frames (a run needs contrast frames)")
        return self


IODS = ("ct", "enhanced-ct", "mr", "enhanced-mr", "pet", "dx", "mg", "breast-tomo", "us")


class SeriesSpec(BaseModel):
    """One series of a modality study: which IOD, what geometry, how many instances."""

    model_config = ConfigDict(extra="forbid")
    description: str = Field(description="Series Description, e.g. 'AX 1.0 mm'")
    iod: Literal[IODS] = Field(description="the IOD builder: " + ", ".join(IODS))  # type: ignore[valid-type]
    kind: str = Field(
        default="",
        description="what the builder makes of it: ct 'localizer' or 'axial' or 'reformat'; mr 'localizer', 't1', "
        "'t2', 'dwi'; mg/dx the view ('CC', 'MLO', 'PA', 'LAT')",
    )
    rows: int = Field(ge=16, le=8192)
    columns: int = Field(ge=16, le=8192)
    bits_stored: int = Field(default=16, ge=8, le=16)
    instances: IntRange = Field(description="instances in the series (before the profile's scale)")
    frames: IntRange = Field(default=IntRange(min=1, max=1), description="frames per instance (multi-frame IODs)")
    scale_frames: bool = Field(
        default=False,
        description="the profile's scale shrinks the frames too (an Enhanced CT stack: its frames are its slices)",
    )
    slice_thickness: float = Field(default=1.0, gt=0, description="mm; also the spacing of consecutive slices")
    pixel_spacing: float = Field(default=0.7, gt=0, description="mm per pixel")
    distinct_images: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="distinct pixel images synthesized (and encoded) per series; instances take them in turn, "
        "so thousands of instances cost the synthesis of a few (their headers all differ)",
    )
    chance: float = Field(default=1.0, gt=0, le=1, description="share of studies that have this series")


class StudyProfile(BaseModel):
    """A modality's study: several series of single- or multi-frame instances (CT, MR, PET-CT, DX, MG, US)."""

    model_config = ConfigDict(extra="forbid")
    name: str = ""
    description: str = ""
    modality: Literal["CT", "MR", "PT", "DX", "MG", "US"] = Field(
        description="the study's main modality (PET-CT studies: PT; their CT series say ct)"
    )
    body_part: str = "CHEST"
    transfer_syntax: Literal[tuple(SYNTAXES)] = DEFAULT_SYNTAX  # type: ignore[valid-type]
    scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="multiplies every series' instance count (at least one instance each): small test versions",
    )
    series: list[SeriesSpec] = Field(min_length=1)
    studies_per_patient: IntRange = IntRange(min=1, max=1)
    instances_per_study: IntRange = Field(
        description="the range of instances per study (at scale 1) the cited sources give; tests hold plans to it"
    )
    dciodvfy_warnings: list[str] = Field(
        default=[], description="the dciodvfy warnings an instance may show, each justified in the profile's comment"
    )

    def scaled(self, scale: float) -> "StudyProfile":
        """The same profile with `scale` (a share of the instances; 1: as published)."""
        if not 0 < scale <= 1:
            raise UserError(f"scale must be in (0, 1] (got {scale:g})")
        return self.model_copy(update={"scale": scale})


AnyProfile = Profile | StudyProfile


def available_profiles(kind: type[BaseModel] | None = None) -> list[str]:
    """Shipped profile names; `kind` Profile (DSA) or StudyProfile (the other modalities) filters them."""
    names = sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))
    if kind is None:
        return names
    return [n for n in names if isinstance(load_profile(n), kind)]


def load_profile(name_or_path: str) -> AnyProfile:
    """A shipped profile by name, or a user's profile from a .toml path.

    A file with a `modality` key is a StudyProfile (series of a modality); without, a DSA Profile."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(available_profiles())
            raise UserError(f"unknown profile '{name_or_path}' (known: {known}; or give a path to a .toml file)")
    model = StudyProfile if "modality" in _keys(path) else Profile
    profile = load_model(path, model, "profile")
    return profile.model_copy(update={"name": profile.name or path.stem})


def _keys(path: Path) -> set[str]:
    """The top-level keys of a profile file (an unreadable one fails in load_model, with its message)."""
    try:
        return set(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError):
        return set()
