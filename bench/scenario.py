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


VM_KINDS = ("kvm", "tcg")
# Settings that only mean something for some kinds: set for another kind, they are an error.
KIND_ONLY = {
    "fsync": ("native", *VM_KINDS), "keep_data": ("native", "orthanc", "dcmtk"),
    "metrics_url": ("remote",), "hypervisor": ("remote",),
    **{name: VM_KINDS for name in ("vcpus", "memory_mib", "network", "data_disk_format", "data_disk_cache",
                                   "data_disk_gib", "boot_timeout")},
}


class TargetSpec(BaseModel):
    """Which archive receives the load: started here (native, kvm, tcg, orthanc, dcmtk) or reached (remote)."""

    model_config = Strict
    kind: Literal["native", "kvm", "tcg", "orthanc", "dcmtk", "remote"]
    label: str | None = Field(default=None, min_length=1, max_length=40, description="name in reports")
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    ae_title: str = Field(default="PACSBENCH", min_length=1, max_length=16)
    # native, kvm, tcg: fsync each file and the index; native, orthanc, dcmtk: keep the stored images afterwards
    fsync: bool = True
    keep_data: bool = False
    max_pdu: int = Field(default=0, ge=0)
    # remote: the archive's HTTP status URL (server_under_test's /status), and the hypervisor the VM runs
    # under as the user knows it (virtualbox, esxi, kvm, none): a mismatch with the detected one is a warning
    metrics_url: str | None = Field(default=None, pattern=r"^https?://")
    hypervisor: str | None = None
    # kvm, tcg: the guest machine
    vcpus: int = Field(default=2, ge=1, le=64)
    memory_mib: int = Field(default=2048, ge=512, le=262144)
    network: Literal["user", "tap"] = "user"
    data_disk_format: Literal["raw", "qcow2"] = "raw"
    data_disk_cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] = "none"
    data_disk_gib: int = Field(default=8, ge=1, le=4096)
    boot_timeout: float = Field(default=300.0, gt=0, description="seconds from QEMU start to a C-ECHO answer")

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> "TargetSpec":
        for name in sorted(self.model_fields_set):
            if name in KIND_ONLY and self.kind not in KIND_ONLY[name]:
                raise ValueError(f"'{name}' applies to {', '.join(KIND_ONLY[name])} targets, not {self.kind}")
        if self.kind == "remote" and self.port is None:
            raise ValueError("a remote target needs 'port' (and usually 'host' and 'ae_title')")
        if self.kind in VM_KINDS and self.network == "tap" and self.port is not None:
            raise ValueError("'port' is the forwarded host port of user-mode networking; a tap guest listens on 11112")
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
    # Named alternatives for `pacsbench matrix --targets NAME,...` (e.g. [targets.tcg-tap]).
    targets: dict[str, TargetSpec] = {}
    studies: StudiesSpec
    load: LoadSpec
    client: ClientSpec = ClientSpec()


def load_scenario(path: Path) -> Scenario:
    scenario = load_model(path, Scenario, "scenario")
    return scenario.model_copy(update={"name": scenario.name or path.stem})
