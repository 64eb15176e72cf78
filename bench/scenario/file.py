"""A scenario file: what load, for how long, against which target (TOML, validated strictly), and its cross-table rules.

A typo is an error, not a silently ignored key: every table forbids unknown keys, and the
message names the file, the table and the key (with a suggestion when one is close).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from bench.common.tomlfile import load_model
from bench.scenario.faults import FaultSpec
from bench.scenario.load import LoadSpec, StudiesSpec
from bench.scenario.settings import ClientSpec, RunSpec
from bench.scenario.targets import BACKUP_KINDS, FAULT_KINDS, ArchiveSpec, TargetSpec
from bench.scenario.users import ModalitySpec, UsersSpec


class Scenario(BaseModel):
    """A whole scenario file: one table per stage it drives."""

    model_config = ConfigDict(extra="forbid")
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
    def _faults_fit(self) -> Scenario:
        if self.faults and not self.target.takes_faults:
            raise ValueError(
                f"[[faults]]: the {self.target.kind} target cannot take faults (only {', '.join(FAULT_KINDS)} in this "
                "version)"
            )
        duration = self.load.duration or 0.0  # set: LoadSpec requires it
        back = 0.0  # when the fault before is over: faults come one after the other
        for fault in self.faults:
            if fault.at >= duration:
                raise ValueError(f"[[faults]] at = {fault.at:g}: beyond the load's duration ({duration:g} s)")
            if fault.at < back:
                raise ValueError(
                    f"[[faults]] at = {fault.at:g}: before the fault listed above it is over ({back:g} s): list "
                    "faults in time order, one at a time"
                )
            back = fault.at + fault.duration
        self._backups_fit()
        return self

    def _backups_fit(self) -> None:
        backups = [f.at for f in self.faults if f.action == "backup"]
        if backups and not self.target.backs_up:
            raise ValueError(
                f'[[faults]] action = "backup": the {self.target.kind} target cannot be backed up by pacsbench (only '
                f"{', '.join(BACKUP_KINDS)})"
            )
        for fault in self.faults:
            if fault.recover == "restore" and not any(at < fault.at for at in backups):
                raise ValueError(
                    f'[[faults]] at = {fault.at:g}: recover = "restore" needs a [[faults]] action = "backup" before it'
                )

    @model_validator(mode="after")
    def _users_add_up(self) -> Scenario:
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


def dicomweb_gap(scenario: Scenario) -> str | None:
    """Why the scenario's DICOMweb users cannot run against its target, in one line (None: they can, or none)."""
    users = scenario.users.dicomweb()
    missing = scenario.target.dicomweb_missing() if users else None
    if missing is None:
        return None
    tables = ", ".join(f"[users.{name}]" for name in users)
    return f"{tables}: {missing}"


def with_dicomweb(scenario: Scenario, verified_by_wado: bool = False) -> Scenario:
    """The scenario with the reference archive (native, or in a guest) told to serve DICOMweb when its users need
    it, or a verification by WADO-RS at the end of the run (`verified_by_wado`)."""
    target = scenario.target
    needed = scenario.users.dicomweb() or verified_by_wado
    if needed and isinstance(target, ArchiveSpec) and not target.dicomweb:
        return scenario.model_copy(update={"target": target.model_copy(update={"dicomweb": True})})
    return scenario


def load_scenario(path: Path) -> Scenario:
    """The scenario in `path`, named after the file unless it names itself; UserError in one line otherwise."""
    scenario = load_model(path, Scenario, "scenario")
    return scenario.model_copy(update={"name": scenario.name or path.stem})
