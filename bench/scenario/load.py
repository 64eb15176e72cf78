"""The scenario's [studies] and [load] tables: what is sent, and how many users for how long, in which shape."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.studies.encode import SYNTAXES

Strict = ConfigDict(extra="forbid")


class StudiesSpec(BaseModel):
    """Which synthetic studies to send; each sent copy gets fresh UIDs."""

    model_config = Strict
    profile: str
    pool: int = Field(default=3, ge=1, le=1000, description="distinct studies synthesized once and cached")
    seed: int = Field(default=1, ge=0)
    transfer_syntax: Literal[tuple(SYNTAXES)] | None = None  # type: ignore[valid-type]  # default: the profile's
    prefill: int = Field(default=0, ge=0, description="studies stored before the load starts (a worklist to read)")
    scale: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="modality profiles (ct, mr, pet-ct-large, ...): keep this share of each series' instances, at "
        "least one: small versions of large studies for tests and smoke runs",
    )


class LoadSpec(BaseModel):
    """How many concurrent users, how fast they start, for how long, in which shape."""

    model_config = Strict
    users: int | None = Field(default=None, ge=1, le=10000, description="total; default: the sum of the counts")
    spawn_rate: float | None = Field(default=None, gt=0, description="users started per second; default: all at once")
    duration: float | None = Field(default=None, gt=0, description="seconds of load (steps: their total)")
    stop_timeout: float = Field(default=60.0, ge=0, description="seconds in-flight requests may take to finish")
    shape: Literal["constant", "steps", "ramp"] = "constant"
    steps: list[int] | None = Field(default=None, description="steps: total users of each step")
    step_seconds: float | None = Field(default=None, gt=0)
    ramp_seconds: float | None = Field(default=None, gt=0, description="ramp: seconds from 1 user to all")

    @model_validator(mode="after")
    def _shape_complete(self) -> LoadSpec:
        if self.shape == "steps":
            if not self.steps or not self.step_seconds or min(self.steps) < 1:
                raise ValueError("shape 'steps' needs steps (users per step, each >= 1) and step_seconds")
            self.duration = self.duration or len(self.steps) * self.step_seconds
            self.users = self.users or max(self.steps)
        if self.shape == "ramp" and not self.ramp_seconds:
            raise ValueError("shape 'ramp' needs ramp_seconds")
        if self.duration is None:
            raise ValueError("duration: required key is missing")
        return self
