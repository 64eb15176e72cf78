"""The scenario's [[faults]]: what happens to the archive during the load, and when."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FAULT_ACTIONS = ("kill", "stop", "pause", "restart", "network-down", "backup")


class FaultSpec(BaseModel):
    """One fault during the load: `at` seconds in, `action` on the archive, `duration` until it is back.

    native: kill = SIGKILL to the archive's process group (a crash: the page cache survives, so
    this tests durability against a process crash, not a power loss); stop = SIGTERM. kvm / tcg:
    kill = SIGKILL to QEMU (a power loss: the guest's page cache dies); stop = Ctrl-Alt-Del (the
    guest's orderly shutdown). Both: pause = SIGSTOP, SIGCONT after `duration`; restart = stop,
    then start at once; after a kill or a stop the archive (or guest, on the same data disk) starts
    again `duration` seconds later on the same data and port. network-down: for `duration` seconds,
    a guest NIC's link down (kvm / tcg), or (native) the host end of the veth pair to the network
    namespace the archive then runs in, instead of on the host's loopback (archive_in_namespace).

    backup (native) = an online backup of the archive while it stores (`pacsbench archive backup`),
    not a fault but an event on the same timeline; a later kill or stop with `recover = "restore"`
    then loses the archive's data folder (a dead disk) and brings it back from that backup before
    it starts again, as the seed paper recovered from its daily backups.
    """

    model_config = ConfigDict(extra="forbid")
    at: float = Field(ge=0, description="seconds into the load")
    action: Literal[FAULT_ACTIONS]  # type: ignore[valid-type]
    duration: float = Field(
        default=0.0, ge=0, description="pause, network-down: how long; kill / stop: restart after this long"
    )
    recover: Literal["restart", "restore"] = Field(
        default="restart",
        description="kill / stop: start again on the same data, or on the data restored from the latest backup "
        "before it",
    )

    @model_validator(mode="after")
    def _recover_fits(self) -> FaultSpec:
        if self.recover == "restore" and self.action not in ("kill", "stop"):
            raise ValueError(f'[[faults]] action = "{self.action}": recover = "restore" goes with kill or stop')
        return self
