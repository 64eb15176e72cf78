"""Scenario files: what load, for how long, against which target (TOML, validated strictly).

A typo is an error, not a silently ignored key: every table forbids unknown keys, and the
message names the file, the table and the key (with a suggestion when one is close).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.tomlfile import load_model

Strict = ConfigDict(extra="forbid")


class TargetSpec(BaseModel):
    """Which archive receives the load."""

    model_config = Strict
    kind: Literal["native", "remote"]
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    ae_title: str = Field(default="PACSBENCH", min_length=1, max_length=16)
    # native only: where the archive keeps its data, and whether to keep it afterwards
    fsync: bool = True
    keep_data: bool = False
    max_pdu: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _remote_needs_address(self) -> "TargetSpec":
        if self.kind == "remote" and self.port is None:
            raise ValueError("a remote target needs 'port' (and usually 'host' and 'ae_title')")
        return self


class StudiesSpec(BaseModel):
    """Which synthetic studies to send; each sent copy gets fresh UIDs."""

    model_config = Strict
    profile: str
    pool: int = Field(default=3, ge=1, le=1000, description="distinct studies synthesized once and cached")
    seed: int = Field(default=1, ge=0)


class LoadSpec(BaseModel):
    """How many concurrent users, how fast they start, for how long."""

    model_config = Strict
    users: int = Field(ge=1, le=10000)
    spawn_rate: float | None = Field(default=None, gt=0, description="users started per second; default: all at once")
    duration: float = Field(gt=0, description="seconds of load")
    stop_timeout: float = Field(default=60.0, ge=0, description="seconds in-flight requests may take to finish")


class ClientSpec(BaseModel):
    """How each simulated client talks DICOM."""

    model_config = Strict
    calling_ae: str = Field(default="PACSBENCH-SCU", min_length=1, max_length=16)
    max_pdu: int = Field(default=0, ge=0, description="maximum PDU we receive; 0 = unlimited")
    timeout: float = Field(default=30.0, gt=0, description="seconds for association set-up and each response")


class Scenario(BaseModel):
    model_config = Strict
    name: str = ""
    description: str = ""
    target: TargetSpec
    studies: StudiesSpec
    load: LoadSpec
    client: ClientSpec = ClientSpec()


def load_scenario(path: Path) -> Scenario:
    scenario = load_model(path, Scenario, "scenario")
    return scenario.model_copy(update={"name": scenario.name or path.stem})
