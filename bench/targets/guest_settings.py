"""The archive's settings as a VM guest reads them (server_under_test/guest.py): one set of names for every
hypervisor. QEMU guests get them as `pacsbench.KEY=VALUE` on the kernel command line, ESXi guests as
`guestinfo.pacsbench.KEY` through VMware Tools."""

from __future__ import annotations

from bench.scenario.targets import StartedSpec


def guest_settings(spec: StartedSpec, port: int, metrics_port: int) -> dict[str, str]:
    """KEY -> VALUE for the guest: its DICOM port, AE title, fsync, maximum PDU and metrics port."""
    return {
        "port": str(port),
        "aet": spec.ae_title,
        "fsync": "1" if spec.fsync else "0",
        "max_pdu": str(spec.max_pdu),
        "metrics_port": str(metrics_port),
    }
