"""The scenario's [client] and [run] tables: how each simulated client talks DICOM, what the harness keeps
for itself."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from server_under_test.config import ConfigError, parse_size

Strict = ConfigDict(extra="forbid")


def size_in_bytes(value: object) -> int | None:
    """A size as the archive's configuration writes it (bytes, or "4 GB", "500 MiB"): the same parser."""
    if value is None:
        return None
    try:
        return parse_size(value, "size")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("size: ")) from None


class ClientSpec(BaseModel):
    """How each simulated client talks DICOM."""

    model_config = Strict
    calling_ae: str = Field(default="PACSBENCH-SCU", min_length=1, max_length=16)
    max_pdu: int = Field(default=0, ge=0, description="maximum PDU we receive; 0 = unlimited")
    timeout: float = Field(default=30.0, gt=0, description="seconds for association set-up and each response")
    move_destination: str = Field(
        default="PACSBENCH-SCP",
        min_length=1,
        max_length=14,
        description="AE title of the harness's Storage SCP (C-MOVE destination)",
    )
    scp_host: str = Field(default="", description="address the archive reaches the harness's SCP at; default: ours")
    scp_port: int = Field(default=0, ge=0, le=65535, description="0: any free port (a native target learns it)")


class RunSpec(BaseModel):
    """What the harness keeps for itself during a run."""

    model_config = Strict
    disk_reserve: int = Field(
        default=2 * 10**9,
        ge=0,
        description="bytes kept free on the run folder's and the archive's disks: the run stops cleanly when free "
        "space falls to it",
    )

    _reserve_size = field_validator("disk_reserve", mode="before")(size_in_bytes)
