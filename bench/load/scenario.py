"""Scenario files: what load, for how long, against which target (TOML, validated strictly).

A typo is an error, not a silently ignored key: every table forbids unknown keys, and the
message names the file, the table and the key (with a suggestion when one is close).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from bench.common.tomlfile import load_model
from bench.studies.encode import SYNTAXES
from server_under_test.config import ConfigError, parse_size

Strict = ConfigDict(extra="forbid")


VM_KINDS = ("kvm", "tcg")
STARTED_KINDS = ("native", *VM_KINDS, "orthanc", "dcmtk")  # the kinds pacsbench starts, and so can give a budget
# Settings that only mean something for some kinds: set for another kind, they are an error.
KIND_ONLY = {
    "fsync": ("native", *VM_KINDS, "orthanc", "dcmtk"), "keep_data": ("native", "orthanc", "dcmtk"),
    "metrics_url": ("remote",), "hypervisor": ("remote",), "capacity": ("native",), "at_capacity": ("native",),
    "cpus": STARTED_KINDS, "memory_mib": STARTED_KINDS,
    **{name: VM_KINDS for name in ("network", "data_disk_format", "data_disk_cache",
                                   "data_disk_gib", "boot_timeout")},
}


# The PDU sizes a kind can be configured with (Orthanc's MaximumPduLength, dcmqrscp's MaxPDUSize);
# max_pdu = 0 (unlimited) gives them their largest.
PDU_RANGE = {"orthanc": (4096, 131072), "dcmtk": (4096, 131072)}


def size_in_bytes(value):
    """A size as the archive's configuration writes it (bytes, or "4 GB", "500 MiB"): the same parser."""
    if value is None:
        return None
    try:
        return parse_size(value, "size")
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("size: ")) from None


class TargetSpec(BaseModel):
    """Which archive receives the load: started here (native, kvm, tcg, orthanc, dcmtk) or reached (remote)."""

    model_config = Strict
    kind: Literal["native", "kvm", "tcg", "orthanc", "dcmtk", "remote"]
    label: str | None = Field(default=None, min_length=1, max_length=40, description="name in reports")
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    ae_title: str = Field(default="PACSBENCH", min_length=1, max_length=16)
    # native, kvm, tcg, orthanc: fsync each file (and the index); dcmtk cannot (only false is honoured);
    # native, orthanc, dcmtk: keep the stored images afterwards
    fsync: bool = True
    keep_data: bool = False
    max_pdu: int = Field(default=0, ge=0)
    # remote: the archive's HTTP status URL (server_under_test's /status), and the hypervisor the VM runs
    # under as the user knows it (virtualbox, esxi, kvm, none): a mismatch with the detected one is a warning
    metrics_url: str | None = Field(default=None, pattern=r"^https?://")
    hypervisor: str | None = None
    # Every started kind gets the same budget: a guest as vCPUs and RAM, a local process in a
    # cgroup (bench.targets.budget). `vcpus` is the key's name in scenarios written before.
    cpus: int = Field(default=2, ge=1, le=64, validation_alias=AliasChoices("cpus", "vcpus"))
    memory_mib: int = Field(default=2048, ge=512, le=262144)
    # kvm, tcg: the guest machine
    network: Literal["user", "tap"] = "user"
    data_disk_format: Literal["raw", "qcow2"] = "raw"
    data_disk_cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] = "none"
    data_disk_gib: int = Field(default=8, ge=1, le=4096)
    boot_timeout: float = Field(default=300.0, gt=0, description="seconds from QEMU start to a C-ECHO answer")
    # native: bytes the archive may store (default: the data disk's free space less [run] disk_reserve), and
    # what happens there: stop the run, answer A700 (reject) or delete the run's oldest studies (recycle)
    capacity: int | None = Field(default=None, ge=1)
    at_capacity: Literal["stop", "reject", "recycle"] = "stop"

    _capacity_size = field_validator("capacity", mode="before")(size_in_bytes)

    @property
    def bounded(self) -> bool:
        """The scenario chose what happens when the archive is full: the run may store more than the disk holds."""
        return bool({"capacity", "at_capacity"} & self.model_fields_set)

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> "TargetSpec":
        for name in sorted(self.model_fields_set):
            # A full dump read back (run.json, a worker's copy) carries every default: only a
            # value that differs from the default is a setting that does not fit the kind.
            if getattr(self, name) == type(self).model_fields[name].default:
                continue
            if name in KIND_ONLY and self.kind not in KIND_ONLY[name]:
                raise ValueError(f"'{name}' applies to {', '.join(KIND_ONLY[name])} targets, not {self.kind}")
        if self.kind in PDU_RANGE and self.max_pdu:
            low, high = PDU_RANGE[self.kind]
            if not low <= self.max_pdu <= high:
                raise ValueError(f"'max_pdu' {self.max_pdu}: {self.kind} takes {low} to {high} bytes (0: its largest)")
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
    transfer_syntax: Literal[tuple(SYNTAXES)] | None = None  # type: ignore[valid-type]  # default: the profile's
    prefill: int = Field(default=0, ge=0, description="studies stored before the load starts (a worklist to read)")


class UserGroup(BaseModel):
    """How many users of one type: a fixed `count`, or a share of [load] users by `weight`."""

    model_config = Strict
    count: int | None = Field(default=None, ge=0)
    weight: int = Field(default=1, ge=1)


class ModalitySpec(UserGroup):
    """Sends whole studies, one C-STORE per instance: paced by studies per hour or instances per second, or flat out."""

    studies_per_hour: float | None = Field(default=None, gt=0)
    instances_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_pace(self) -> "ModalitySpec":
        if self.studies_per_hour and self.instances_per_s:
            raise ValueError("give studies_per_hour or instances_per_s, not both")
        return self


class WorkstationSpec(UserGroup):
    """C-FIND the worklist, retrieve a study (C-MOVE to the harness or C-GET), read it at a human pace."""

    retrieve: Literal["move", "get"] = "move"
    reading_images_per_s: float | None = Field(default=10.0, gt=0, description="reading pace; none: no reading time")
    worklist_wait: float = Field(default=2.0, gt=0, description="seconds before asking again when the worklist is empty")
    check_digests: bool = Field(default=False, description="hash every retrieved instance (verify compares them)")


class QuerySpec(UserGroup):
    """C-FIND over the whole archive at one level (study root)."""

    level: Literal["STUDY", "SERIES", "IMAGE"] = "STUDY"
    queries_per_s: float | None = Field(default=None, gt=0, description="per user; none: flat out")


class EchoSpec(UserGroup):
    """C-ECHO every `interval` seconds: a liveness probe and the cheapest request."""

    interval: float = Field(default=1.0, ge=0)


USER_TYPES = ("modality", "workstation", "query", "echo")


class UsersSpec(BaseModel):
    model_config = Strict
    modality: ModalitySpec | None = None
    workstation: WorkstationSpec | None = None
    query: QuerySpec | None = None
    echo: EchoSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_types(cls, data):
        unknown = [key for key in data if key not in USER_TYPES] if isinstance(data, dict) else []
        if unknown:
            guess = difflib.get_close_matches(unknown[0], USER_TYPES, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise ValueError(f"unknown user type '{unknown[0]}' ({hint}known: {', '.join(USER_TYPES)})")
        return data

    def groups(self) -> dict[str, UserGroup]:
        return {name: getattr(self, name) for name in USER_TYPES if getattr(self, name) is not None}


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
    def _shape_complete(self) -> "LoadSpec":
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


class ClientSpec(BaseModel):
    """How each simulated client talks DICOM."""

    model_config = Strict
    calling_ae: str = Field(default="PACSBENCH-SCU", min_length=1, max_length=16)
    max_pdu: int = Field(default=0, ge=0, description="maximum PDU we receive; 0 = unlimited")
    timeout: float = Field(default=30.0, gt=0, description="seconds for association set-up and each response")
    move_destination: str = Field(default="PACSBENCH-SCP", min_length=1, max_length=14,
                                  description="AE title of the harness's Storage SCP (C-MOVE destination)")
    scp_host: str = Field(default="", description="address the archive reaches the harness's SCP at; default: ours")
    scp_port: int = Field(default=0, ge=0, le=65535, description="0: any free port (a native target learns it)")


class RunSpec(BaseModel):
    """What the harness keeps for itself during a run."""

    model_config = Strict
    disk_reserve: int = Field(default=2 * 10**9, ge=0, description="bytes kept free on the run folder's and the "
                              "archive's disks: the run stops cleanly when free space falls to it")

    _reserve_size = field_validator("disk_reserve", mode="before")(size_in_bytes)


FAULT_ACTIONS = ("kill", "stop", "pause", "restart", "network-down", "backup")
FAULT_KINDS = ("native", *VM_KINDS)  # the kinds a fault can be injected into
BACKUP_KINDS = ("native",)  # the kinds pacsbench can back up and restore (its own archive, on this host)


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

    model_config = Strict
    at: float = Field(ge=0, description="seconds into the load")
    action: Literal[FAULT_ACTIONS]  # type: ignore[valid-type]
    duration: float = Field(default=0.0, ge=0, description="pause, network-down: how long; kill / stop: restart after "
                            "this long")
    recover: Literal["restart", "restore"] = Field(
        default="restart", description="kill / stop: start again on the same data, or on the data restored from "
        "the latest backup before it")

    @model_validator(mode="after")
    def _recover_fits(self) -> "FaultSpec":
        if self.recover == "restore" and self.action not in ("kill", "stop"):
            raise ValueError(f'[[faults]] action = "{self.action}": recover = "restore" goes with kill or stop')
        return self


class Scenario(BaseModel):
    model_config = Strict
    name: str = ""
    description: str = ""
    target: TargetSpec
    # Named alternatives for `pacsbench matrix --targets NAME,...` (e.g. [targets.tcg-tap]).
    targets: dict[str, TargetSpec] = {}
    studies: StudiesSpec
    load: LoadSpec
    users: UsersSpec = UsersSpec(modality=ModalitySpec())  # no [users] tables: modalities sending flat out
    client: ClientSpec = ClientSpec()
    run: RunSpec = RunSpec()
    faults: list[FaultSpec] = []

    @model_validator(mode="after")
    def _faults_fit(self) -> "Scenario":
        if self.faults and self.target.kind not in FAULT_KINDS:
            raise ValueError(f"[[faults]]: the {self.target.kind} target cannot take faults (only "
                             f"{', '.join(FAULT_KINDS)} in this version)")
        back = 0.0  # when the fault before is over: faults come one after the other
        for fault in self.faults:
            if fault.at >= self.load.duration:
                raise ValueError(f"[[faults]] at = {fault.at:g}: beyond the load's duration ({self.load.duration:g} s)")
            if fault.at < back:
                raise ValueError(f"[[faults]] at = {fault.at:g}: before the fault listed above it is over "
                                 f"({back:g} s): list faults in time order, one at a time")
            back = fault.at + fault.duration
        self._backups_fit()
        return self

    def _backups_fit(self) -> None:
        backups = [f.at for f in self.faults if f.action == "backup"]
        if backups and self.target.kind not in BACKUP_KINDS:
            raise ValueError(f'[[faults]] action = "backup": the {self.target.kind} target cannot be backed up by '
                             f"pacsbench (only {', '.join(BACKUP_KINDS)})")
        for fault in self.faults:
            if fault.recover == "restore" and not any(at < fault.at for at in backups):
                raise ValueError(f'[[faults]] at = {fault.at:g}: recover = "restore" needs a [[faults]] action = '
                                 '"backup" before it')

    @model_validator(mode="after")
    def _users_add_up(self) -> "Scenario":
        groups = self.users.groups()
        if not groups:
            raise ValueError("[users] has no user type: add [users.modality], [users.workstation], ...")
        fixed = sum(g.count or 0 for g in groups.values())
        weighted = [name for name, g in groups.items() if g.count is None]
        if self.load.users is None:
            if weighted:
                raise ValueError(f"[load] users: required when [users.{weighted[0]}] has no count")
            self.load.users = fixed
        if fixed > self.load.users:
            raise ValueError(f"[load] users ({self.load.users}) is less than the user counts ({fixed})")
        if weighted and fixed == self.load.users and self.load.shape == "constant":
            raise ValueError(f"[users.{weighted[0]}] would get no users: the counts take all [load] users")
        return self


def archive_in_namespace(scenario: Scenario) -> bool:
    """Whether the archive runs in a network namespace of its own, joined to the host by a veth pair.

    Only a native archive with a network-down fault: the host's loopback cannot be taken down for
    the archive alone, the host end of a veth can. The load and the harness's Storage SCP then
    reach the archive over the veth (a path unlike loopback); every other run stays on loopback.
    """
    return scenario.target.kind == "native" and any(f.action == "network-down" for f in scenario.faults)


def load_scenario(path: Path) -> Scenario:
    scenario = load_model(path, Scenario, "scenario")
    return scenario.model_copy(update={"name": scenario.name or path.stem})
