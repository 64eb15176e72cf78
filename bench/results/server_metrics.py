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
    # The hypervisor's own view of the VM. ESXi's PerformanceManager (real-time interval of 20 s): filled only in
    # the row of the second a new sample arrived; hypervisor_sample_time is the end of the 20 s it covers.
    "hypervisor_sample_time",
    "hypervisor_interval_seconds",
    "hypervisor_cpu_ready_percent",  # per vCPU: cpu.ready.summation ms / (interval s x 1000) x 100 / vCPUs
    "hypervisor_cpu_costop_percent",  # per vCPU, the same from cpu.costop.summation
    "hypervisor_cpu_usage_percent",  # cpu.usage.average: 100 = all the VM's vCPUs busy
    "hypervisor_memory_ballooned_bytes",  # mem.vmmemctl.average
    "hypervisor_memory_swapped_bytes",  # mem.swapped.average
    "hypervisor_disk_read_latency_ms",  # virtualDisk.totalReadLatency.average, the slowest virtual disk
    "hypervisor_disk_write_latency_ms",  # virtualDisk.totalWriteLatency.average, the slowest virtual disk
    "hypervisor_net_received_bytes_per_s",  # net.received.average
    "hypervisor_net_transmitted_bytes_per_s",  # net.transmitted.average
    # VirtualBox's `VBoxManage metrics` of the VM process, each second (CPU in percent as VirtualBox gives it).
    "hypervisor_cpu_user_pct",
    "hypervisor_cpu_kernel_pct",
    "hypervisor_ram_used_mib",
)
GUEST_COLUMNS = COLUMNS[COLUMNS.index("guest_cpu_percent") : COLUMNS.index("hypervisor_sample_time")]
HYPERVISOR_COLUMNS = COLUMNS[COLUMNS.index("hypervisor_sample_time") :]
