"""The archive's settings as a VM guest reads them (server_under_test/guest.py): one set of names for every
hypervisor. QEMU guests get them as `pacsbench.KEY=VALUE` on the kernel command line, ESXi guests as
`guestinfo.pacsbench.KEY` through VMware Tools; VirtualBox guests get none and run with the guest's defaults."""

from __future__ import annotations

from bench.scenario.targets import ArchiveSpec


def guest_settings(spec: ArchiveSpec, port: int, metrics_port: int, dicomweb_port: int) -> dict[str, str]:
    """KEY -> VALUE for the guest: its DICOM port, AE title, fsync, maximum PDU, metrics port and DICOMweb port
    (0 when the run has no DICOMweb users: the guest's default would serve it, and the native archive does not)."""
    return {
        "port": str(port),
        "aet": spec.ae_title,
        "fsync": "1" if spec.fsync else "0",
        "max_pdu": str(spec.max_pdu),
        "metrics_port": str(metrics_port),
        "dicomweb_port": str(dicomweb_port if spec.dicomweb else 0),
    }


def dicomweb_url(host: str, port: int) -> str:
    """The base URL of the guest archive's DICOMweb side, reached at host:port (a forward, or the guest itself)."""
    # Imported here: the routes' module loads aiohttp, which only a target with DICOMweb needs.
    from server_under_test.dicomweb.app import BASE_PATH

    return f"http://{host}:{port}{BASE_PATH}"
