"""Study profiles: TOML data describing what a modality's studies look like."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.common.errors import UserError
from bench.common.tomlfile import load_model
from bench.studies.encode import DEFAULT_SYNTAX, SYNTAXES

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
    transfer_syntax: Literal[tuple(SYNTAXES)] = DEFAULT_SYNTAX  # type: ignore[valid-type]
    runs_per_study: IntRange
    frames_per_run: IntRange
    studies_per_patient: IntRange = IntRange(min=1, max=1)

    @model_validator(mode="after")
    def _masks_fit(self) -> "Profile":
        if self.frames_per_run.min <= self.mask_frames:
            raise ValueError("frames_per_run.min must exceed mask_frames (a run needs contrast frames)")
        return self


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """A shipped profile by name, or a user's profile from a .toml path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(available_profiles())
            raise UserError(f"unknown profile '{name_or_path}' (known: {known}; or give a path to a .toml file)")
    profile = load_model(path, Profile, "profile")
    return profile.model_copy(update={"name": profile.name or path.stem})
