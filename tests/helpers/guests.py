"""The guest image the QEMU tests boot, built once for all the xdist workers that run guests.

Two lanes of guest tests run side by side (tests/helpers/groups.py); when the image's inputs
changed (server_under_test, say), each would otherwise build it at once, and the second build
would replace the folder the first one's guest boots from. A host-wide lock (flock, released
when its holder dies) lets the first build it and the others find it in the cache.
"""

from __future__ import annotations

import fcntl
import tempfile
from pathlib import Path

BUILD_LOCK = Path(tempfile.gettempdir()) / "pacsbench-tests-guest-image.lock"


def shared_guest_image():
    """The cached guest image for the current inputs, built here if no test built it yet."""
    from bench.targets.vm.image import ensure_image

    with BUILD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return ensure_image(progress=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
