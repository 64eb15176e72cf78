"""server_metrics.csv: the run's per-second resource rows (written by bench.runs.resources, read by the analysis)."""

from __future__ import annotations

SERVER_METRICS_FILE = "server_metrics.csv"
# pacsbench's own columns, in file order; a file from elsewhere may hold other numeric columns.
COLUMNS = (
    "time",
    "server_cpu_percent",
    "server_cpu_budget_percent",
    "server_rss_bytes",
    "server_threads",
    "server_open_fds",
    "server_processes",
    "server_cpus_busy_percent",
    "disk_read_bytes_per_s",
    "disk_write_bytes_per_s",
    "disk_busy_percent",
    "net_sent_bytes_per_s",
    "net_recv_bytes_per_s",
    "net_link_bytes_per_s",
    "host_cpu_percent",
    "host_iowait_percent",
    "host_steal_percent",
    "load_cpu_percent",
    "load_busiest_cpu_percent",
    # The archive's own machine as it sees itself (a guest's /proc/stat through its /metrics), 100 = all its CPUs.
    "guest_cpu_percent",
    "guest_steal_percent",
    "guest_iowait_percent",
    "guest_cpus",
    # The archive's VM as its hypervisor sees it: VirtualBox's `VBoxManage metrics` of the VM process (CPU in
    # percent as VirtualBox gives it, resident memory).
    "hypervisor_cpu_user_pct",
    "hypervisor_cpu_kernel_pct",
    "hypervisor_ram_used_mib",
)
GUEST_COLUMNS = COLUMNS[COLUMNS.index("guest_cpu_percent") : COLUMNS.index("guest_cpus") + 1]
HYPERVISOR_COLUMNS = tuple(column for column in COLUMNS if column.startswith("hypervisor_"))
