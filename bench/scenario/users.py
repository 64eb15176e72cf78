"""The scenario's [users.*] tables: which kinds of DICOM users make up the load, how many of each, at what pace.

DIMSE users (modality, workstation, query, echo) speak over associations; DICOMweb users (stow, qido, wado) over
HTTP to the target's DICOMweb base URL, on the same study pool: their figures stand side by side in the report.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strict = ConfigDict(extra="forbid")


class UserGroup(BaseModel):
    """How many users of one type: a fixed `count`, or a share of [load] users by `weight`."""

    model_config = Strict
    count: int | None = Field(default=None, ge=0)
    weight: int = Field(default=1, ge=1)


class ModalitySpec(UserGroup):
    """Sends whole studies, one C-STORE per instance: paced by studies per hour or instances per second, or flat out."""

    studies_per_hour: float | None = Field(default=None, gt=0)
    instances_per_s: float | None = Field(default=None, gt=0)
    profile: str | None = Field(
        default=None,
        description="the study profile this modality sends (ct, mr, us, ...); default: [studies] profile",
    )
    studies: int | None = Field(
        default=None, ge=1, description="studies each user sends, then it stops (none: until the load ends)"
    )
    check_queryable: bool = Field(
        default=False,
        description="after each study, C-FIND it until the archive counts all its instances "
        "(NumberOfStudyRelatedInstances): a QUERYABLE sample, timed from the study's last C-STORE",
    )
    move_after: bool = Field(
        default=False, description="then C-MOVE the whole study to the harness (after check_queryable, if set)"
    )

    @model_validator(mode="after")
    def _one_pace(self) -> ModalitySpec:
        if self.studies_per_hour and self.instances_per_s:
            raise ValueError("give studies_per_hour or instances_per_s, not both")
        return self


class WorkstationSpec(UserGroup):
    """C-FIND the worklist, retrieve a study (C-MOVE to the harness or C-GET), read it at a human pace."""

    retrieve: Literal["move", "get"] = "move"
    reading_images_per_s: float | None = Field(default=10.0, gt=0, description="reading pace; none: no reading time")
    worklist_wait: float = Field(
        default=2.0, gt=0, description="seconds before asking again when the worklist is empty"
    )
    check_digests: bool = Field(default=False, description="hash every retrieved instance (verify compares them)")


class QuerySpec(UserGroup):
    """C-FIND over the whole archive at one level (study root)."""

    level: Literal["STUDY", "SERIES", "IMAGE"] = "STUDY"
    queries_per_s: float | None = Field(default=None, gt=0, description="per user; none: flat out")


class EchoSpec(UserGroup):
    """C-ECHO every `interval` seconds: a liveness probe and the cheapest request."""

    interval: float = Field(default=1.0, ge=0)


class StowSpec(UserGroup):
    """STOW-RS: stores whole studies, one POST of multipart/related application/dicom per study (or per
    `instances_per_request` instances of it), paced by studies per hour or flat out."""

    studies_per_hour: float | None = Field(default=None, gt=0, description="per user; none: flat out")
    instances_per_request: int | None = Field(
        default=None, ge=1, description="instances in one POST; none: the whole study in one"
    )


class QidoSpec(UserGroup):
    """QIDO-RS: searches the archive for studies, or for the series or instances of a study it found."""

    level: Literal["studies", "series", "instances"] = "studies"
    queries_per_s: float | None = Field(default=None, gt=0, description="per user; none: flat out")


class WadoSpec(UserGroup):
    """A DICOMweb reading workstation: QIDO-RS the worklist, WADO-RS one study, read it at a human pace, repeat;
    the DICOMweb side of [users.workstation]. What it retrieves of the study is `retrieve`: the instances
    (multipart application/dicom), what a viewer does (the study's metadata, then every instance's frames), or
    the metadata alone."""

    retrieve: Literal["instances", "frames", "metadata"] = Field(
        default="instances",
        description="instances: the study as multipart application/dicom (WADO-RS); frames: the study's metadata "
        "(WADO-RS metadata), then each instance's frames, frames_per_request at a time (WADO-RS frames); "
        "metadata: the study's metadata (application/dicom+json) only",
    )
    frames_per_request: int = Field(
        default=1,
        ge=1,
        le=1000,
        description='frames in one WADO-RS frames request (/frames/1,2,3); with retrieve = "frames"',
    )
    reading_images_per_s: float | None = Field(default=10.0, gt=0, description="reading pace; none: no reading time")
    worklist_wait: float = Field(
        default=2.0, gt=0, description="seconds before asking again when the worklist is empty"
    )
    check_digests: bool = Field(
        default=False,
        description='hash every retrieved instance (verify compares them); with retrieve = "frames", check every '
        "frame against the pool's pixel data (native: its byte slice; encapsulated: its fragments)",
    )

    @model_validator(mode="after")
    def _frames_only(self) -> WadoSpec:
        # Not "was it set": run.json's full dump sets the default, and must read back.
        if self.frames_per_request != 1 and self.retrieve != "frames":
            raise ValueError(f'frames_per_request needs retrieve = "frames" (retrieve is "{self.retrieve}")')
        return self


DIMSE_USER_TYPES = ("modality", "modalities", "workstation", "query", "echo")
DICOMWEB_USER_TYPES = ("stow", "qido", "wado")
USER_TYPES = DIMSE_USER_TYPES + DICOMWEB_USER_TYPES


class UsersSpec(BaseModel):
    """The [users] table: one optional table per user type; [users.modalities.NAME] for several modalities."""

    model_config = Strict
    modality: ModalitySpec | None = None
    modalities: dict[str, ModalitySpec] = Field(
        default={},
        description="more modality groups in one run, by name ([users.modalities.ct], [users.modalities.mr], ...), "
        "each with its own profile, pace and count",
    )
    workstation: WorkstationSpec | None = None
    query: QuerySpec | None = None
    echo: EchoSpec | None = None
    stow: StowSpec | None = None
    qido: QidoSpec | None = None
    wado: WadoSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_types(cls, data: Any) -> Any:
        unknown = [key for key in data if key not in USER_TYPES] if isinstance(data, dict) else []
        if unknown:
            guess = difflib.get_close_matches(unknown[0], USER_TYPES, n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise ValueError(f"unknown user type '{unknown[0]}' ({hint}known: {', '.join(USER_TYPES)})")
        return data

    def groups(self) -> dict[str, UserGroup]:
        """The user groups the scenario has, by table name in USER_TYPES order: 'modality', 'modalities.NAME', ..."""
        found: dict[str, UserGroup] = {}
        for name in USER_TYPES:
            if name == "modalities":
                found.update({f"modalities.{key}": spec for key, spec in self.modalities.items()})
            elif getattr(self, name) is not None:
                found[name] = getattr(self, name)
        return found

    def modality_groups(self) -> dict[str, ModalitySpec]:
        """The groups that send studies: [users.modality] and each [users.modalities.NAME]."""
        return {name: g for name, g in self.groups().items() if isinstance(g, ModalitySpec)}

    def dicomweb(self) -> list[str]:
        """The DICOMweb user types with users (the target must then serve DICOMweb)."""
        return [name for name, group in self.groups().items() if name in DICOMWEB_USER_TYPES and group.count != 0]


def role_of(group_name: str) -> str:
    """The user type of a group: 'modalities.ct' is a modality."""
    return "modality" if group_name.startswith("modalities.") else group_name
