"""Is a DICOM peer ready? It is when it answers C-ECHO: the one wait used by targets, sinks and benchmarks.

Never a TCP connect: a port can accept connections long before the DICOM service behind it
is able to answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.common.errors import UserError
from bench.dicom.peer import AssociationFailed, Peer, echo_once

RETRY_SECONDS = 0.1  # a refused connection returns at once: polling often costs little and times readiness finely


class NoEchoAnswer(UserError):
    """The peer gave no C-ECHO answer in time (or the process behind it exited)."""

    def __init__(self, peer: Peer, timeout: float, reason: str):
        super().__init__(f"target {peer} did not answer C-ECHO within {timeout:g} s: {reason}")
        self.reason = reason


def wait_for_echo(peer: Peer, calling_ae: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> float:
    """C-ECHO until the peer answers; the seconds waited. Stops early once `alive()` is false."""
    start = time.monotonic()
    last_error = ""
    while time.monotonic() - start < timeout:
        if not alive():
            break
        try:
            echo_once(peer, calling_ae, timeout=min(5.0, timeout))
            return time.monotonic() - start
        except AssociationFailed as exc:
            last_error = str(exc)
            time.sleep(RETRY_SECONDS)
    raise NoEchoAnswer(peer, timeout, last_error or "process exited")
