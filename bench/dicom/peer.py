"""The peer a benchmark talks to, why it cannot be reached, and a C-ECHO through pynetdicom.

Every call is bounded by timeouts so nothing in a benchmark can hang: ACSE (association
set-up), DIMSE (waiting for a response) and network (idle socket).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from server_under_test.upper_layer.status import SUCCESS, status_class


class AssociationFailed(Exception):
    """The peer could not be reached, refused or aborted the association."""


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    ae_title: str
    dicomweb_url: str | None = None  # the archive's DICOMweb base URL, when it serves DICOMweb (PS3.18)

    def __str__(self) -> str:
        return f"{self.host}:{self.port} (AE {self.ae_title})"


def _why_unreachable(peer: Peer, timeout: float) -> str:
    """After a failed association, find the network-level reason for the message."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=timeout):
            return "the TCP connection opens but the association was aborted or timed out"
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return "connection refused (nothing listening on that port?)"
        return exc.strerror or str(exc)


class DicomClient:
    """One Verification association to one peer, through pynetdicom (echo_once: the targets' probe)."""

    def __init__(self, peer: Peer, calling_ae: str = "PACSBENCH-SCU", max_pdu: int = 0, timeout: float = 30.0):
        self.peer = peer
        self.timeout = timeout
        self.ae = AE(ae_title=calling_ae)
        self.ae.maximum_pdu_size = max_pdu
        self.ae.acse_timeout = timeout
        self.ae.dimse_timeout = timeout
        self.ae.network_timeout = timeout
        self.ae.connection_timeout = timeout
        self.ae.add_requested_context(Verification)
        self.assoc = None

    @property
    def connected(self) -> bool:
        return self.assoc is not None and self.assoc.is_established

    def connect(self) -> None:
        assoc = self.ae.associate(self.peer.host, self.peer.port, ae_title=self.peer.ae_title)
        if not assoc.is_established:
            raise AssociationFailed(self._failure_reason(assoc))
        sock = assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.assoc = assoc

    def _failure_reason(self, assoc) -> str:
        if assoc.is_rejected:
            return (
                f"{self.peer} rejected the association "
                f"(calling AE {self.ae.ae_title}: not allowed, or wrong called AE?)"
            )
        return f"cannot associate with {self.peer}: {_why_unreachable(self.peer, min(self.timeout, 5.0))}"

    def echo(self) -> int:
        """Send a C-ECHO; return the DICOM status, or raise AssociationFailed."""
        return self._status(self.assoc.send_c_echo(), "C-ECHO")

    def _status(self, response: Dataset, operation: str) -> int:
        if "Status" not in response:
            # No response: timeout, abort or a broken connection. The association is gone.
            self.abort()
            raise AssociationFailed(f"{operation}: no response from {self.peer} (association aborted or timed out)")
        return int(response.Status)

    def release(self) -> None:
        if self.connected:
            self.assoc.release()
        self.assoc = None

    def abort(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.abort()
        self.assoc = None


def echo_once(peer: Peer, calling_ae: str = "PACSBENCH-SCU", timeout: float = 10.0) -> None:
    """Associate, C-ECHO, release; raise AssociationFailed with a clear reason."""
    client = DicomClient(peer, calling_ae, timeout=timeout)
    client.connect()
    try:
        status = client.echo()
    finally:
        client.release()
    if status_class(status) != SUCCESS:
        raise AssociationFailed(f"{peer} answered C-ECHO with status 0x{status:04X}")
