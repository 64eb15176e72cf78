"""The scenario's [target] (and [targets.NAME]): one model per kind of archive, told apart by `kind`.

A kind's model holds only the settings that mean something for it, so a setting of another
kind is an unknown key. A new kind is one model here and its entry in TargetSpec; bench.targets
then gives it a Target class and a line in make_target.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from bench.scenario.settings import size_in_bytes
from server_under_test.guest import DEFAULTS as GUEST_DEFAULTS


class TargetBase(BaseModel):
    """What every kind takes: where the archive listens and how it is named."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    label: str | None = Field(default=None, min_length=1, max_length=40, description="name in reports")
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    ae_title: str = Field(default="PACSBENCH", min_length=1, max_length=16)
    max_pdu: int = Field(default=0, ge=0, description="the archive's maximum PDU; 0: unlimited (or its largest)")

    takes_faults: ClassVar[bool] = False  # [[faults]] can be injected into it
    backs_up: ClassVar[bool] = False  # pacsbench can back it up and restore it (its own archive, on this host)

    def dicomweb_missing(self) -> str | None:
        """Why this target has no DICOMweb side for [users.stow], [users.qido] or [users.wado] (None: it has one)."""
        return f"the {self.kind} target has no DICOMweb side"

    @model_validator(mode="before")
    @classmethod
    def _read_back(cls, data: Any) -> Any:
        """Always name the kind (a dump without it would not parse again); drop another kind's defaults.

        run.json and worker copies written before kinds had models of their own carry every
        setting of every kind at its default: such a key is no setting, only a value that differs
        from the default is one (and then an unknown key for this kind).
        """
        if not isinstance(data, dict):
            return data
        kept = {key: value for key, value in data.items() if key in cls.model_fields or not _a_default(key, value)}
        return {"kind": cls.model_fields["kind"].default, **kept}


class StartedSpec(TargetBase):
    """A kind pacsbench starts here: it chooses the archive's durability and gives it a budget."""

    # native, kvm, tcg, orthanc: fsync each file (and the index); dcmtk cannot (only false is honoured)
    fsync: bool = True
    # A guest as vCPUs and RAM, a local process in a cgroup (bench.targets.budget). `vcpus` is the
    # key's name in scenarios written before.
    cpus: int = Field(default=2, ge=1, le=64, validation_alias=AliasChoices("cpus", "vcpus"))
    memory_mib: int = Field(default=2048, ge=512, le=262144)


class ArchiveSpec(StartedSpec):
    """The reference archive (server_under_test), started by pacsbench here or in a VM (native, kvm, tcg, esxi):
    it serves DICOMweb beside DIMSE when the run needs it."""

    # DICOMweb beside DIMSE (--dicomweb-port, a guest's dicomweb_port): on by itself in a run with DICOMweb users
    dicomweb: bool = Field(default=False, description="serve DICOMweb too (on when the scenario has DICOMweb users)")

    def dicomweb_missing(self) -> str | None:
        return None  # started with DICOMweb on when the run needs it


class NativeSpec(ArchiveSpec):
    """The reference archive (server_under_test) as a local process."""

    kind: Literal["native"] = "native"
    keep_data: bool = Field(default=False, description="keep the stored images afterwards")
    # Bytes the archive may store (default: the data disk's free space less [run] disk_reserve), and
    # what happens there: stop the run, answer A700 (reject) or delete the run's oldest studies (recycle)
    capacity: int | None = Field(default=None, ge=1)
    at_capacity: Literal["stop", "reject", "recycle"] = "stop"

    takes_faults: ClassVar[bool] = True
    backs_up: ClassVar[bool] = True

    _capacity_size = field_validator("capacity", mode="before")(size_in_bytes)

    @property
    def bounded(self) -> bool:
        """The scenario chose what happens when the archive is full: the run may store more than the disk holds."""
        return bool({"capacity", "at_capacity"} & self.model_fields_set)


class VmSpec(ArchiveSpec):
    """The reference archive in a QEMU guest (kvm, tcg): the guest machine."""

    network: Literal["user", "tap"] = "user"
    data_disk_format: Literal["raw", "qcow2"] = "raw"
    data_disk_cache: Literal["none", "writeback", "writethrough", "directsync", "unsafe"] = "none"
    data_disk_gib: int = Field(default=8, ge=1, le=4096)
    boot_timeout: float = Field(default=300.0, gt=0, description="seconds from QEMU start to a C-ECHO answer")

    takes_faults: ClassVar[bool] = True

    @model_validator(mode="after")
    def _port_fits_the_network(self) -> VmSpec:
        if self.network == "tap" and self.port is not None:
            raise ValueError("'port' is the forwarded host port of user-mode networking; a tap guest listens on 11112")
        return self


class KvmSpec(VmSpec):
    kind: Literal["kvm"] = "kvm"


class TcgSpec(VmSpec):
    kind: Literal["tcg"] = "tcg"


class InstalledSpec(StartedSpec):
    """An installed archive pacsbench configures and starts (orthanc, dcmtk): PDU sizes within its range."""

    keep_data: bool = Field(default=False, description="keep the stored images afterwards")
    # The PDU sizes the program can be configured with (Orthanc's MaximumPduLength, dcmqrscp's MaxPDUSize)
    pdu_range: ClassVar[tuple[int, int]] = (4096, 131072)

    @model_validator(mode="after")
    def _pdu_in_range(self) -> InstalledSpec:
        low, high = self.pdu_range
        if self.max_pdu and not low <= self.max_pdu <= high:
            raise ValueError(f"'max_pdu' {self.max_pdu}: {self.kind} takes {low} to {high} bytes (0: its largest)")
        return self

    @property
    def pdu_size(self) -> int:
        """The PDU size the program is given: the scenario's, or its largest for 0 (unlimited)."""
        return self.max_pdu or self.pdu_range[1]


class OrthancSpec(InstalledSpec):
    kind: Literal["orthanc"] = "orthanc"
    dicomweb: bool = Field(default=False, description="load Orthanc's DICOMweb plugin (Debian orthanc-dicomweb)")

    def dicomweb_missing(self) -> str | None:
        return None if self.dicomweb else "the orthanc target serves DICOMweb only with dicomweb = true in its table"


class DcmtkSpec(InstalledSpec):
    """DCMTK's dcmqrscp."""

    kind: Literal["dcmtk"] = "dcmtk"


class VirtualBoxSpec(TargetBase):
    """The exported OVA imported into VirtualBox with VBoxManage, started headless, removed afterwards.

    VirtualBox hands the guest no settings (guestinfo is VMware's): its archive runs with the guest's
    defaults (AE title PACSBENCH, fsync on, 1 MiB PDUs, DICOMweb on), reached through NAT port forwarding."""

    kind: Literal["virtualbox"] = "virtualbox"
    cpus: int = Field(default=2, ge=1, le=64, validation_alias=AliasChoices("cpus", "vcpus"))
    memory_mib: int = Field(default=2048, ge=512, le=262144)
    ova: str | None = Field(default=None, description="the OVA to import; default: `pacsbench vm export`'s, built once")
    data_disk_gib: int = Field(default=8, ge=1, le=4096, description="the data disk, resized before power-on")
    boot_timeout: float = Field(default=300.0, gt=0, description="seconds from startvm to a C-ECHO answer")

    def dicomweb_missing(self) -> str | None:
        return None  # the guest's defaults serve DICOMweb; its port is forwarded like DICOM's

    @model_validator(mode="after")
    def _guest_defaults(self) -> VirtualBoxSpec:
        """The scenario may state the guest's own values (a matrix holds max_pdu fixed across targets), no others."""
        pdu = int(GUEST_DEFAULTS["max_pdu"])
        if self.ae_title != GUEST_DEFAULTS["aet"] or self.max_pdu not in (0, pdu) or self.host != "127.0.0.1":
            raise ValueError(
                f"a virtualbox guest takes no settings: it answers as {GUEST_DEFAULTS['aet']} with {pdu}-byte PDUs "
                "on a port forwarded to 127.0.0.1 (leave 'ae_title', 'max_pdu' and 'host' out)"
            )
        return self


class RemoteSpec(TargetBase):
    """Any archive reachable over the network; pacsbench starts nothing."""

    kind: Literal["remote"] = "remote"
    # The archive's HTTP status URL (server_under_test's /status), and the hypervisor the VM runs under
    # as the user knows it (virtualbox, esxi, kvm, none): a mismatch with the detected one is a warning
    metrics_url: str | None = Field(default=None, pattern=r"^https?://")
    hypervisor: str | None = None
    dicomweb_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="the archive's DICOMweb base URL (e.g. http://pacs:8042/dicom-web)",
    )

    def dicomweb_missing(self) -> str | None:
        return None if self.dicomweb_url else "the remote target has no dicomweb_url (its DICOMweb base URL)"

    @model_validator(mode="after")
    def _has_an_address(self) -> RemoteSpec:
        if self.port is None:
            raise ValueError("a remote target needs 'port' (and usually 'host' and 'ae_title')")
        return self


class EsxiSpec(ArchiveSpec):
    """The reference archive's OVA deployed on a VMware ESXi host or through a vCenter, run, then destroyed.

    `host` is the ESXi host or vCenter pacsbench talks to (its vSphere API); the archive is reached at
    the address VMware Tools reports for the VM, on `port`. cpus and memory_mib are the VM's, its
    memory fully reserved."""

    kind: Literal["esxi"] = "esxi"
    host: str = Field(min_length=1, description="the ESXi host or vCenter (its vSphere API, over HTTPS)")
    api_port: int = Field(default=443, ge=1, le=65535, description="the vSphere API's HTTPS port")
    port: int = Field(default=11112, ge=1, le=65535, description="the DICOM port the archive listens on in the VM")
    metrics_port: int = Field(default=8080, ge=1, le=65535, description="the archive's HTTP status port in the VM")
    dicomweb_port: int = Field(
        default=int(GUEST_DEFAULTS["dicomweb_port"]),
        ge=1,
        le=65535,
        description="the archive's DICOMweb port in the VM (served when dicomweb is on)",
    )
    user: str = Field(min_length=1, description="the vSphere user (root on a host, user@vsphere.local on a vCenter)")
    password_env: str = Field(
        default="PACSBENCH_ESXI_PASSWORD",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable holding the password (never the password itself)",
    )
    ca_file: str | None = Field(default=None, description="PEM file of the CA (or certificate) to verify the host by")
    thumbprint: str | None = Field(
        default=None, description="the host certificate's SHA-1 or SHA-256 thumbprint, pinned"
    )
    insecure: bool = Field(default=False, description="no TLS verification at all (run.json and the report say so)")
    datacenter: str | None = Field(default=None, description="default: the only (or first) datacenter")
    datastore: str = Field(min_length=1, description="where the VM's disks go")
    network: str = Field(default="VM Network", min_length=1, description="the port group the VM's card joins")
    resource_pool: str | None = Field(default=None, description="default: the host's or cluster's root pool")
    cluster: str | None = Field(default=None, description="a vCenter cluster to deploy into")
    esxi_host: str | None = Field(default=None, description="a host of the vCenter to deploy on")
    ova: str | None = Field(default=None, description="default: the OVA `pacsbench vm export` makes (made if missing)")
    data_disk_gib: int = Field(default=8, ge=1, le=4096, description="the archive's data disk (the OVA's second disk)")
    keep: bool = Field(default=False, description="leave the VM (powered off) afterwards instead of destroying it")
    boot_timeout: float = Field(default=600.0, gt=0, description="seconds from power-on to a C-ECHO answer")

    @field_validator("thumbprint")
    @classmethod
    def _a_thumbprint(cls, value: str | None) -> str | None:
        digits = (value or "").replace(":", "")
        if value is not None and not (len(digits) in (40, 64) and all(c in "0123456789abcdefABCDEF" for c in digits)):
            raise ValueError("give the SHA-1 (40 hex digits) or SHA-256 (64) thumbprint, colons allowed")
        return value

    @model_validator(mode="after")
    def _one_way_to_trust(self) -> EsxiSpec:
        if self.insecure and (self.ca_file or self.thumbprint):
            raise ValueError("'insecure = true' turns verification off: give it, or 'ca_file'/'thumbprint', not both")
        return self


TargetSpec = Annotated[
    NativeSpec | KvmSpec | TcgSpec | OrthancSpec | DcmtkSpec | VirtualBoxSpec | RemoteSpec | EsxiSpec,
    Field(discriminator="kind"),
]

# Each kind's model, by kind, in the union's order; and the kinds that take faults, or backups.
TARGET_MODELS: dict[str, type[TargetBase]] = {
    model.model_fields["kind"].default: model for model in typing.get_args(typing.get_args(TargetSpec)[0])
}
KINDS = tuple(TARGET_MODELS)
FAULT_KINDS = tuple(kind for kind, model in TARGET_MODELS.items() if model.takes_faults)
BACKUP_KINDS = tuple(kind for kind, model in TARGET_MODELS.items() if model.backs_up)


def _a_default(key: str, value: Any) -> bool:
    """Whether `value` is the default of `key` in some kind's model."""
    defaults = [model.model_fields[key].default for model in TARGET_MODELS.values() if key in model.model_fields]
    return key != "kind" and value in defaults


_ADAPTER: TypeAdapter[TargetSpec] = TypeAdapter(TargetSpec)


def target_spec(settings: dict[str, Any]) -> TargetSpec:
    """The spec of the kind `settings` names (pydantic.ValidationError, a ValueError, when they do not fit it)."""
    return _ADAPTER.validate_python(settings)
