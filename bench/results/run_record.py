"""run.json: who ran what, where, with which versions, and what the run measured beside the sample rows.

bench.runs.scenario_run builds a RunRecord part by part as the run goes (it is rewritten at
each stage, so a run that fails still says how far it got); analysis, report, verify and the
CLI parse it. Parts a run did not reach are absent (None here).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from bench.results.record_base import Part, Record

# --- where it ran ---------------------------------------------------------------------------


class HostRecord(Part):
    """The machine the harness ran on: enough to tell bare metal from a VM and one box from another."""

    hostname: str | None = Field(default=None, description="The harness host's name.")
    os: str | None = Field(default=None, description="platform.platform() of the harness host.")
    kernel: str | None = Field(default=None, description="The kernel release.")
    python: str | None = Field(default=None, description="The Python version that ran the harness.")
    cpu_model: str | None = Field(default=None, description="The CPU model name (/proc/cpuinfo).")
    cpus: int | None = Field(default=None, description="Logical CPUs of the harness host.")
    memory_bytes: int | None = Field(default=None, description="Physical memory of the harness host.")
    cpu_hypervisor_flag: bool | None = Field(
        default=None, description="The CPU's hypervisor flag: the host is itself a VM."
    )
    dmi_sys_vendor: str | None = Field(
        default=None, description="DMI system vendor (names a hypervisor's virtual board)."
    )
    dmi_product_name: str | None = Field(default=None, description="DMI product name.")
    load_average: list[float] | None = Field(default=None, description="1, 5 and 15 minute load averages at the start.")


class StorageDevice(Part):
    """A block device and file system holding the archive's data, as the archive saw it."""

    model_config = ConfigDict(extra="allow")  # reported by the archive (another release, maybe): kept as it came

    path: str | None = Field(default=None, description="The data path asked about.")
    device: str | None = Field(default=None, description="Its block device (sda, vdb ...).")
    rotational: str | None = Field(default=None, description="'1' for a spinning disk, '0' for solid state (sysfs).")
    model: str | None = Field(default=None, description="The device model (sysfs).")
    mount: str | None = Field(default=None, description="The mount point holding the path.")
    fs_type: str | None = Field(default=None, description="The file system type.")
    fs_journal: bool | None = Field(
        default=None, description="ext4: whether it keeps a journal (false: crash consistency rests on fsck)."
    )
    fs_total_bytes: int | None = Field(default=None, description="The file system's size.")
    fs_free_bytes: int | None = Field(default=None, description="Its free space when asked.")


class EnvironmentRecord(Part):
    """The archive's own report of its machine (server_under_test.environment, from its /status)."""

    # Open: a remote or guest archive may be of another release and report more; a run's record must
    # not be lost for a fact it could not know. The fields below are the ones pacsbench reads.
    model_config = ConfigDict(extra="allow")

    hypervisor: str | None = Field(
        default=None, description="The hypervisor the archive detected ('none' on bare metal)."
    )
    detected_by: str | None = Field(default=None, description="How: systemd-detect-virt, dmi or the CPU flag.")
    container: str | None = Field(default=None, description="The container it runs in ('none', 'docker' ...).")
    systemd_detect_virt: str | None = Field(default=None, description="The innermost layer systemd-detect-virt names.")
    dmi_sys_vendor: str | None = Field(default=None, description="DMI system vendor of the archive's machine.")
    dmi_product_name: str | None = Field(default=None, description="DMI product name of the archive's machine.")
    cpu_hypervisor_flag: bool | None = Field(default=None, description="The CPU's hypervisor flag there.")
    cpu_model: str | None = Field(default=None, description="CPU model of the archive's machine.")
    vcpus: int | None = Field(default=None, description="Logical CPUs the archive sees.")
    memory_bytes: int | None = Field(default=None, description="Memory the archive sees.")
    kernel: str | None = Field(default=None, description="Its kernel release.")
    hostname: str | None = Field(default=None, description="Its host name.")
    storage: list[StorageDevice] = Field(default_factory=list, description="The devices holding its data.")


# --- the target -----------------------------------------------------------------------------


class BudgetUsage(Part):
    """What the cgroup saw: CPU throttling and peak memory."""

    cpu_periods: int | None = Field(default=None, description="CFS periods the archive ran in.")
    cpu_throttled_periods: int | None = Field(default=None, description="Periods in which the CPU quota stopped it.")
    cpu_throttled_seconds: float | None = Field(default=None, description="Time it spent stopped by the quota.")
    memory_peak_bytes: int | None = Field(
        default=None, description="Its peak memory (memory.peak or max_usage_in_bytes)."
    )


class BudgetRecord(Part):
    """The CPUs and memory the archive was given, and what enforced them: the same for every kind compared."""

    cpus: int | float | None = Field(default=None, description="CPUs of the budget (a guest's vCPUs); None: no budget.")
    memory_bytes: int | None = Field(default=None, description="Memory of the budget; None: no limit.")
    enforced_by: str = Field(
        default="none", description="cgroup-v2, cgroup-v1, affinity, guest (QEMU), esxi-vm, virtualbox-vm or none."
    )
    memory_reservation_bytes: int | None = Field(
        default=None, description="Memory the hypervisor reserved for the VM (esxi-vm: all of it, no ballooning)."
    )
    controllers: list[str] | None = Field(default=None, description="The cgroup controllers used.")
    cpu_ids: list[int] | None = Field(default=None, description="The CPUs the archive was pinned to.")
    usage: BudgetUsage | None = Field(default=None, description="What the cgroup measured, when one was used.")


class EsxiVmRecord(Part):
    """The VM an esxi target deployed, as configured before power-on."""

    name: str | None = Field(default=None, description="The VM's name (pacsbench-<run id>).")
    moref: str | None = Field(default=None, description="Its managed object id on the host.")
    hardware_version: str | None = Field(default=None, description="Its virtual hardware version (vmx-NN).")
    guest_id: str | None = Field(default=None, description="The guest OS type ESXi read from the OVF.")
    vcpus: int | None = Field(default=None, description="vCPUs set.")
    memory_mib: int | None = Field(default=None, description="Memory set.")
    memory_reservation_mib: int | None = Field(default=None, description="Memory reserved (all of it).")
    disks_gib: list[float] | None = Field(default=None, description="Its virtual disks' sizes.")
    destroyed: bool | None = Field(default=None, description="Whether it was destroyed after the run.")


class EsxiRecord(Part):
    """The ESXi host (or vCenter) an esxi target ran on, and how pacsbench talked to it."""

    server: str = Field(description="The ESXi host or vCenter the vSphere API was reached at.")
    tls: str = Field(description="How its certificate was trusted (NOT VERIFIED with insecure = true).")
    insecure: bool = Field(default=False, description="TLS verification was off (insecure = true).")
    simulator: bool = Field(default=False, description="It was govmomi's simulator (vcsim), not ESXi.")
    product: str | None = Field(default=None, description="about.fullName: product, version and build.")
    product_build: str | None = Field(default=None, description="about.build.")
    api_type: str | None = Field(default=None, description="HostAgent (an ESXi host) or VirtualCenter.")
    esxi_host: str | None = Field(default=None, description="The host the VM ran on.")
    host_cpu_model: str | None = Field(default=None, description="That host's CPU model.")
    host_cpu_sockets: int | None = Field(default=None, description="Its CPU sockets.")
    host_cpu_cores: int | None = Field(default=None, description="Its CPU cores.")
    host_cpu_threads: int | None = Field(default=None, description="Its CPU threads.")
    datastore: str | None = Field(default=None, description="The datastore holding the VM's disks.")
    datastore_type: str | None = Field(default=None, description="Its type (VMFS, NFS, vsan ...).")
    network: str | None = Field(default=None, description="The port group of the VM's card.")
    vm: EsxiVmRecord | None = Field(default=None, description="The VM as configured.")
    guestinfo: dict[str, str] | None = Field(default=None, description="The archive's settings as guestinfo keys.")
    data_disk: str | None = Field(default=None, description="The archive's data disk (the OVA's second disk).")
    kept: bool = Field(default=False, description="The VM was kept (powered off) after the run (keep = true).")
    leftovers_removed: list[str] = Field(
        default_factory=list, description="VMs of killed harnesses removed before this run."
    )


class TargetRecord(Part):
    """The archive under test as it ran: its kind, address, settings, budget and the machine it ran on.

    One model for every kind: a field a kind does not have stays absent."""

    kind: str = Field(description="native, remote, orthanc, dcmtk, kvm, tcg, esxi or virtualbox.")
    label: str | None = Field(
        default=None, description="The name reports give it (a [targets.NAME] table, else the kind)."
    )
    hypervisor: str | None = Field(
        default=None,
        description="The hypervisor detected under the archive ('unknown': none "
        "detected; a declared one is never recorded as detected).",
    )
    declared_hypervisor: str | None = Field(default=None, description="The hypervisor the scenario declared (remote).")
    hypervisor_source: str | None = Field(default=None, description="How the hypervisor label was found.")
    requested_hypervisor: str | None = Field(default=None, description="The hypervisor asked for (kvm, tcg, remote).")
    container: str | None = Field(default=None, description="The container the archive ran in.")
    vcpus: int | None = Field(default=None, description="CPUs the archive saw.")
    memory_bytes: int | None = Field(default=None, description="Memory the archive saw.")
    memory_mib: int | None = Field(default=None, description="A guest's RAM as configured.")
    server: str | None = Field(default=None, description="The archive's name and version.")
    disk: str | None = Field(
        default=None, description="The archive's data disk in words (device and file system, or a guest's disk set-up)."
    )
    environment: EnvironmentRecord | None = Field(default=None, description="The archive's own report of its machine.")
    accelerator: str | None = Field(default=None, description="A guest's QEMU accelerator (kvm or tcg).")
    network: str | None = Field(
        default=None, description="The path the load took, in words (loopback, veth, user-mode NAT, tap)."
    )
    # Open: machine facts recorded for people tracing a figure; no code reads them back.
    namespace: dict[str, Any] | None = Field(
        default=None,
        description="The network namespace of a native archive run behind a veth pair (for network-down faults).",
    )
    network_settings: dict[str, Any] | None = Field(
        default=None, description="A guest's network set-up (mode, forwards, tap, bridge)."
    )
    disks: dict[str, Any] | None = Field(
        default=None, description="A guest's system and data disks (image, format, cache, bus)."
    )
    image: dict[str, Any] | None = Field(default=None, description="The guest image used (folder, digest, kernel).")
    qemu: dict[str, Any] | None = Field(
        default=None, description="QEMU's facts: version, command line, console log, exit code."
    )
    virtualbox: dict[str, Any] | None = Field(
        default=None,
        description="VirtualBox's facts: VBoxManage --version, the host (list hostinfo), the VM's name, UUID and "
        "description (the run id and the harness), the import command, disks, NAT forwarding, VMs of killed runs "
        "removed first.",
    )
    host: str | None = Field(default=None, description="The address the load connected to.")
    port: int | None = Field(default=None, description="The DICOM port the load connected to.")
    ae_title: str | None = Field(default=None, description="The archive's AE title.")
    metrics_url: str | None = Field(
        default=None, description="A remote archive's (or a VirtualBox guest's) metrics URL."
    )
    dicomweb_url: str | None = Field(
        default=None, description="The archive's DICOMweb base URL (PS3.18), when it served DICOMweb."
    )
    fsync: bool | None = Field(default=None, description="Whether the archive forced its writes to disk.")
    max_pdu: int | None = Field(default=None, description="The largest PDU the archive receives (0: no limit).")
    budget: BudgetRecord | None = Field(default=None, description="The CPUs and memory the archive was given.")
    capacity_bytes: int | None = Field(default=None, description="A native archive's capacity.")
    at_capacity: str | None = Field(
        default=None, description="What a native archive does at capacity: stop, reject, recycle."
    )
    data: str | None = Field(default=None, description="The archive's data folder.")
    storage_kept: bool | None = Field(
        default=None, description="Whether the stored instances were kept after the run (keep_data)."
    )
    destinations: dict[str, str] | None = Field(
        default=None, description="C-MOVE destinations the archive knew: AE title -> host:port."
    )
    environment_variables: dict[str, str] | None = Field(
        default=None, description="Environment set for an installed archive (Orthanc, dcmqrscp)."
    )
    sync_storage_area: bool | None = Field(default=None, description="Orthanc's SyncStorageArea.")
    plugins: list[str] | None = Field(default=None, description="Orthanc plugins loaded.")
    boot_to_ready_seconds: float | None = Field(
        default=None, description="A guest's boot until its archive answered C-ECHO."
    )
    ready_seconds: float | None = Field(default=None, description="Start until the archive answered C-ECHO.")
    exit_code: int | None = Field(default=None, description="The archive's (or QEMU's) exit code once stopped.")
    esxi: EsxiRecord | None = Field(default=None, description="An esxi target's host, VM and TLS trust.")


# --- the load -------------------------------------------------------------------------------


class LoadProcesses(Part):
    """How the load was spread over processes."""

    mode: str = Field(description="local (the master alone) or distributed (workers).")
    local_workers: int = Field(default=0, description="Worker processes started on this host.")
    remote_workers: int = Field(default=0, description="Workers that joined from elsewhere.")


class WorkerRecord(Part):
    """One load worker of a distributed run, as the master saw it join."""

    worker: str = Field(description="The worker's host-pid (the samples' `worker` column).")
    index: int = Field(description="Its number, from 0, in the order it joined.")
    state: str = Field(description="measuring clock, setting up or ready.")
    host_name: str = Field(default="", description="The host it runs on.")
    address: str = Field(default="", description="Its address as the master saw it.")
    clock_offset_seconds: float | None = Field(
        default=None, description="Its clock less the master's (bench.load.clock); its rows' times are moved by this."
    )
    clock_round_trip_seconds: float | None = Field(
        default=None, description="The round trip of the best clock exchange."
    )
    ae: str | None = Field(default=None, description="The AE title of its Storage SCP (C-MOVE destination).")
    host: str | None = Field(default=None, description="Its Storage SCP's address.")
    port: int | None = Field(default=None, description="Its Storage SCP's port.")


class CalibrationRecord(Part):
    """The harness's ceiling for this run, from the calibration cache entry matching its host, profile and syntax."""

    matched: bool = Field(
        default=True,
        description="Whether a calibration matched this run's fingerprint (records from before fingerprints: yes).",
    )
    fingerprint: dict[str, Any] | str | None = Field(default=None, description="This run's calibration fingerprint.")
    closest: dict[str, Any] | str | None = Field(
        default=None, description="The closest cached fingerprint, when none matched."
    )
    note: str | None = Field(default=None, description="Why no calibration matched.")
    ceiling_instances_per_s: float | None = Field(
        default=None, description="The harness's C-STORE ceiling for this run's load processes."
    )
    ceiling_mb_per_s: float | None = Field(default=None, description="The same in MB/s.")
    retrieve_get_ceiling_instances_per_s: float | None = Field(default=None, description="The C-GET ceiling.")
    retrieve_get_ceiling_mb_per_s: float | None = Field(default=None, description="The C-GET ceiling in MB/s.")
    retrieve_move_ceiling_instances_per_s: float | None = Field(default=None, description="The C-MOVE ceiling.")
    retrieve_move_ceiling_mb_per_s: float | None = Field(default=None, description="The C-MOVE ceiling in MB/s.")
    stow_ceiling_instances_per_s: float | None = Field(
        default=None, description="The stow users' STOW-RS ceiling (into a null DICOMweb peer)."
    )
    stow_ceiling_mb_per_s: float | None = Field(default=None, description="The STOW-RS ceiling in MB/s.")
    wado_ceiling_instances_per_s: float | None = Field(
        default=None, description="The wado users' WADO-RS ceiling (whole studies from a null DICOMweb peer)."
    )
    wado_ceiling_mb_per_s: float | None = Field(default=None, description="The WADO-RS ceiling in MB/s.")
    processes: int | None = Field(default=None, description="Load processes the one-process ceiling was multiplied by.")
    # Open: a copy of the calibration cache's entry, whose shape is the cache's (bench.load.calibrate).
    measured: dict[str, Any] | None = Field(
        default=None, description="The calibration cache entry the ceiling comes from."
    )
    derivation: str | None = Field(default=None, description="How the ceiling was derived, in words.")

    def ceiling(self, prefix: str, unit: str) -> float | None:
        """The ceiling of `prefix` ("" for ingest, "retrieve_get_", "retrieve_move_", "stow_", "wado_") in `unit`
        (instances_per_s, mb_per_s)."""
        value: float | None = getattr(self, f"{prefix}ceiling_{unit}")
        return value


class DiskRecord(Part):
    """The disk space planned before the run, and what the watch saw during it."""

    reserve_bytes: int | None = Field(default=None, description="Free space the run keeps on every watched disk.")
    results_free_bytes: int | None = Field(
        default=None, description="Free space under the results folder at the start."
    )
    store_rate_bytes_per_s: int | None = Field(default=None, description="The store rate the plan assumed.")
    rate_basis: str | None = Field(default=None, description="Where that rate came from.")
    archive_need_bytes: int | None = Field(default=None, description="Space the archive may need for the run.")
    records_need_bytes: int | None = Field(default=None, description="Space the row files may need.")
    capacity_bytes: int | None = Field(default=None, description="A native archive's capacity as planned.")
    warning: str | None = Field(default=None, description="The plan's warning, when the run may store more than fits.")
    lowest_free_bytes: dict[str, int] | None = Field(
        default=None, description="Per watched path, its lowest free space."
    )
    highest_used_bytes: dict[str, int] | None = Field(default=None, description="Per watched path, its highest use.")
    stop_detail: str | None = Field(default=None, description="Why the watch stopped the run, when it did.")


class StudiesRecord(Part):
    """The study pool the run sent copies of."""

    profile: str = Field(description="The study profile's name.")
    # Open: the profile model's dump (bench.studies.profile), documented with the profile.
    profile_settings: dict[str, Any] = Field(default_factory=dict, description="The profile's settings.")
    seed: int | None = Field(default=None, description="The pool's random seed.")
    studies: int = Field(description="Studies in the pool.")
    patients: int | None = Field(default=None, description="Patients in the pool.")
    instances: int = Field(description="Instances in the pool.")
    frames: int | None = Field(default=None, description="Frames in the pool.")
    bytes: int = Field(description="Encoded bytes of the pool.")
    transfer_syntaxes: list[str] = Field(default_factory=list, description="Transfer syntax UIDs of the pool.")
    transfer_syntax_names: list[str] = Field(default_factory=list, description="Their names.")
    cache_folder: str | None = Field(default=None, description="Where the pool is cached.")


class PrefillRecord(Part):
    """The studies stored before the load started."""

    studies: int = Field(description="Studies prefilled.")
    instances: int = Field(description="Instances prefilled.")
    bytes: int = Field(description="Bytes prefilled.")
    seconds: float = Field(description="How long the prefill took.")


class GuestView(Part):
    """What the archive's own /metrics gave the guest columns of server_metrics.csv."""

    sampled: bool = Field(description="Whether any row got guest figures.")
    columns: list[str] = Field(default_factory=list, description="The guest columns.")
    url: str | None = Field(default=None, description="Where they were scraped.")
    rows: int | None = Field(default=None, description="Rows written.")
    rows_with_values: int | None = Field(default=None, description="Rows that got guest figures.")
    why: str | None = Field(default=None, description="Why the guest columns are empty, when they are.")


class HypervisorView(Part):
    """What the hypervisor's own view of the archive's VM gave the hypervisor_* columns of server_metrics.csv."""

    source: str = Field(description="Where the figures came from (ESXi's PerformanceManager, the host, the VM).")
    interval_seconds: int = Field(description="The hypervisor's sampling interval (ESXi real-time: 20 s).")
    columns: list[str] = Field(default_factory=list, description="The hypervisor columns.")
    samples: int = Field(default=0, description="Samples that arrived during the run (rows with hypervisor values).")
    sampled: bool = Field(description="Whether any sample arrived.")
    synthetic: bool = Field(
        default=False, description="The values come from a simulator (govmomi's vcsim): synthetic, measuring nothing."
    )
    note: str | None = Field(default=None, description="Why the figures are synthetic or absent, when they are.")


class ResourcesRecord(Part):
    """The per-second resource sampler of the run (server_metrics.csv)."""

    file: str = Field(description="The file it wrote.")
    interval_seconds: float = Field(description="Its sampling interval.")
    server_pid: int | None = Field(default=None, description="The archive's (or QEMU's) root pid at the start.")
    budget_cpus: float | None = Field(default=None, description="The budget's CPUs, for the archive's share of them.")
    load_pids: list[int] = Field(default_factory=list, description="The load processes sampled.")
    disk: str | None = Field(default=None, description="The block device sampled.")
    interface: str | None = Field(default=None, description="The network interface sampled.")
    guest_view: GuestView | None = Field(default=None, description="What the guest columns hold.")
    hypervisor_view: HypervisorView | None = Field(
        default=None, description="What the hypervisor columns hold (an esxi target's VM as ESXi saw it)."
    )
    exit_code: int | None = Field(default=None, description="The sampler's exit code.")


class SuboperationTotals(Part):
    """One retrieve operation's requests and the archive's sub-operation counts against what arrived."""

    requests: int = Field(description="C-MOVE or C-GET requests.")
    completed: int = Field(description="Sub-operations the archive reported completed.")
    failed: int = Field(description="Sub-operations it reported failed.")
    warning: int = Field(description="Sub-operations it reported with a warning.")
    arrived: int = Field(description="Instances that arrived.")
    arrived_bytes: int = Field(description="Bytes that arrived.")


class StepRecord(Part):
    """One step of a stepped load shape: its acknowledged C-STORE throughput and latency."""

    users: int = Field(description="Users during the step.")
    seconds: float = Field(description="The step's measured seconds (its first 20% left out).")
    instances_per_s: float = Field(description="Acknowledged instances per second.")
    frames_per_s: float = Field(description="Frames per second.")
    mb_per_s: float = Field(description="MB per second.")
    c_store_p50_ms: float | None = Field(default=None, description="C-STORE median latency.")
    c_store_p95_ms: float | None = Field(default=None, description="C-STORE 95th percentile latency.")


class CapacityRecord(Part):
    """A bounded native archive's capacity, use and recycled totals at the end (its /status)."""

    capacity_bytes: int | None = Field(default=None, description="The archive's capacity.")
    used_bytes: int | None = Field(default=None, description="Bytes it held at the end.")
    recycled_studies: int = Field(default=0, description="Studies it recycled to make room.")
    recycled_instances: int = Field(default=0, description="Instances of those studies.")
    recycled_bytes: int = Field(default=0, description="Bytes of those studies.")
    archive_at_capacity: str | None = Field(default=None, description="What the archive said it does at capacity.")
    at_capacity: str | None = Field(default=None, description="What the scenario asked for at capacity.")


# --- faults and verification ----------------------------------------------------------------


class BackupRecord(Part):
    """A backup the archive took during the load."""

    folder: str | None = Field(default=None, description="Where the backup went.")
    seconds: float = Field(description="How long it took.")
    instances: int = Field(description="Instances it holds.")
    bytes: int = Field(description="Bytes it holds.")
    mb_per_s: float | None = Field(default=None, description="Its speed.")
    snapshot_time: float | str | None = Field(default=None, description="When its index snapshot was taken.")
    summary: str | None = Field(default=None, description="The archive's own summary line.")
    started_unix_time: float | None = Field(default=None, description="When it started (Unix s).")


class RestoreRecord(Part):
    """A restore from the backup after a fault (recover = "restore")."""

    seconds: float = Field(description="How long it took.")
    instances: int = Field(description="Instances restored.")
    bytes: int = Field(description="Bytes restored.")
    mb_per_s: float | None = Field(default=None, description="Its speed.")
    summary: str | None = Field(default=None, description="The archive's own summary line.")


class FaultRecord(Part):
    """One injected fault: when, how the archive recovered, and what it lost."""

    action: str = Field(description="kill, stop, restart, pause, backup or network-down.")
    at: float = Field(description="Seconds into the load it was due.")
    duration: float | None = Field(default=None, description="How long a pause or network-down lasted.")
    happened: bool = Field(description="Whether it was injected.")
    error: str | None = Field(default=None, description="Why it was not, or what went wrong.")
    into_load_seconds: float | None = Field(default=None, description="Seconds into the load it happened.")
    unix_time: float | None = Field(default=None, description="When it happened (Unix s).")
    backup: BackupRecord | None = Field(default=None, description="The backup a backup action took.")
    down_seconds: float | None = Field(default=None, description="From the fault until the link was down.")
    startup_seconds: float | None = Field(default=None, description="The archive's start-up after the fault.")
    exit_code: int | None = Field(default=None, description="The archive's exit code at the fault.")
    first_echo_seconds: float | None = Field(default=None, description="Fault to the first successful C-ECHO after it.")
    first_store_seconds: float | None = Field(
        default=None, description="Fault to the first successful C-STORE after it."
    )
    recovery_seconds: float | None = Field(default=None, description="Fault to recovery.")
    recovery_by: str | None = Field(default=None, description="What showed the recovery.")
    failed_during_outage: int | None = Field(
        default=None, description="Requests that failed between fault and recovery."
    )
    failed_by_status: dict[str, int] | None = Field(
        default=None, description="Those, by status ('no response' or 0xNNNN)."
    )
    acknowledged_before: int | None = Field(
        default=None, description="Instances acknowledged before the fault (or the backup, after a restore)."
    )
    lost: int | None = Field(default=None, description="Of those, instances a C-GET after the load did not return.")
    changed: int | None = Field(default=None, description="Of those, instances returned with other bytes.")
    lost_counted_from: str | None = Field(
        default=None, description="What `lost` counts from (after a restore: the backup)."
    )
    recovery_point_seconds: float | None = Field(default=None, description="From the backup's start to the fault.")
    acknowledged_after_backup: int | None = Field(
        default=None, description="Instances acknowledged between backup and fault."
    )
    lost_after_backup: int | None = Field(
        default=None, description="Of those, instances not returned: the recovery point's price."
    )
    retrieve_failures: list[str] | None = Field(
        default=None, description="C-GET requests of the loss check that failed."
    )
    recover: str | None = Field(default=None, description="'restore' when the archive was restored from the backup.")
    restore: RestoreRecord | None = Field(default=None, description="What the restore took.")


class VerifyExamples(Part):
    """A few SOP instance UIDs of each kind of difference."""

    missing: list[str] = Field(default_factory=list, description="Acknowledged, not returned.")
    different: list[str] = Field(default_factory=list, description="Returned with other bytes.")
    retrieved_different: list[str] = Field(
        default_factory=list, description="Retrieved by a workstation with other bytes."
    )


class VerifyRecord(Part):
    """A verification: did the archive return, byte for byte, every instance it acknowledged? (verify.json too)"""

    ok: bool = Field(description="No instance lost or changed, no request failed.")
    target: str = Field(description="The archive verified against.")
    protocol: str = Field(default="C-GET", description="How the instances were retrieved: C-GET or WADO-RS.")
    instances: int = Field(description="Instances acknowledged (sent.csv).")
    studies: int = Field(description="Their studies.")
    skipped_recycled: int = Field(default=0, description="Instances of studies the archive recycled on purpose.")
    returned: int = Field(description="Instances returned.")
    missing: int = Field(description="Instances not returned.")
    different: int = Field(description="Instances returned with other bytes.")
    retrieved_checked: int = Field(default=0, description="Workstation retrievals checked (retrieved.csv).")
    retrieved_different: int = Field(default=0, description="Of those, with other bytes.")
    failed_requests: list[str] = Field(default_factory=list, description="C-GET (or WADO-RS) requests that failed.")
    examples: VerifyExamples = Field(default_factory=VerifyExamples, description="Example UIDs.")
    seconds: float | None = Field(default=None, description="How long the verification took.")


# --- the record -----------------------------------------------------------------------------


class RunRecord(Record):
    """run.json: one run from start to end."""

    run_id: str = Field(description="The run folder's name.")
    status: str = Field(
        description="started, running, completed, interrupted, failed, or 'stopped: ...' (why the load ended early)."
    )
    scenario_file: str | None = Field(default=None, description="The scenario file run.")
    # The scenario model; connected at merge (bench.scenario): its dump, with every default.
    scenario: dict[str, Any] = Field(
        default_factory=dict, description="The full scenario as run (its target spec included)."
    )
    studies: StudiesRecord | None = Field(default=None, description="The study pool.")
    modality_studies: dict[str, StudiesRecord] = Field(
        default_factory=dict,
        description="The pools of the [users.modalities.NAME] groups' own profiles, by profile name "
        "(the [studies] profile's is `studies`).",
    )
    load_processes: LoadProcesses | None = Field(default=None, description="How the load was spread.")
    calibration: CalibrationRecord | None = Field(
        default=None, description="The harness's ceiling for this run; None: no calibration cached."
    )
    disk: DiskRecord | None = Field(default=None, description="Disk space planned and watched.")
    versions: dict[str, str | None] = Field(
        default_factory=dict, description="Package -> version (None: not installed)."
    )
    host: HostRecord | None = Field(default=None, description="The harness host.")
    command: list[str] = Field(default_factory=list, description="The command line that ran it.")
    harness_scp: dict[str, str] | None = Field(
        default=None, description="The harness's Storage SCPs: AE title -> host:port."
    )
    target: TargetRecord | None = Field(default=None, description="The archive under test as it ran.")
    warnings: list[str] = Field(default_factory=list, description="Warnings a reader must see.")
    prefill: PrefillRecord | None = Field(default=None, description="Studies stored before the load.")
    resources: ResourcesRecord | None = Field(default=None, description="The resource sampler.")
    started: str | None = Field(default=None, description="When the load started (UTC, ISO 8601).")
    ended: str | None = Field(default=None, description="When it ended.")
    load_seconds: float | None = Field(default=None, description="The load's length.")
    samples: int | None = Field(default=None, description="Rows in samples.csv.")
    workers: list[WorkerRecord] = Field(default_factory=list, description="The load workers (distributed runs).")
    suboperations: dict[str, SuboperationTotals] = Field(
        default_factory=dict, description="Per retrieve operation (C-MOVE, C-GET): its totals."
    )
    steps: list[StepRecord] | None = Field(default=None, description="Per step of a stepped load shape.")
    faults: list[FaultRecord] | None = Field(default=None, description="The faults injected.")
    verify: VerifyRecord | None = Field(default=None, description="The first verification.")
    verify_later: list[VerifyRecord] = Field(default_factory=list, description="Later verifications, oldest first.")
    capacity: CapacityRecord | None = Field(default=None, description="A bounded native archive's use at the end.")
    error: str | None = Field(default=None, description="Why the run failed.")
    traceback: str | None = Field(default=None, description="The traceback of an unexpected failure.")
    target_stop_seconds: float | None = Field(default=None, description="How long stopping the target took.")

    @property
    def target_label(self) -> str:
        """What reports call the target: its label, else its kind."""
        return str((self.target.label or self.target.kind) if self.target else "unknown")
