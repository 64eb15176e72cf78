"""Study profiles: TOML data describing what a modality's studies look like."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.errors import UserError
from bench.tomlfile import load_model

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "dsa-unit"


class IntRange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is smaller than min ({self.min})")
        return self


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
    runs_per_study: IntRange
    frames_per_run: IntRange

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
