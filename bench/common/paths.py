"""Where pacsbench keeps what it builds once (the cache) and what it measured here (the state), and how it
removes a large folder tree.

The cache holds costly artifacts rebuilt from their inputs when missing (the study pools, the
guest image): removing it costs time, never a result. The state holds what only this machine's
user made and a rebuild cannot give back (the calibrations). Two roots, so that a test session
can share the costly cache while it never reads the user's state.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def cache_root() -> Path:
    """$PACSBENCH_CACHE, else $XDG_CACHE_HOME/pacsbench, else ~/.cache/pacsbench."""
    if os.environ.get("PACSBENCH_CACHE"):
        return Path(os.environ["PACSBENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pacsbench"


def state_root() -> Path:
    """$PACSBENCH_STATE, else $XDG_STATE_HOME/pacsbench, else ~/.local/state/pacsbench."""
    if os.environ.get("PACSBENCH_STATE"):
        return Path(os.environ["PACSBENCH_STATE"])
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "pacsbench"


def remove_tree(path: Path) -> None:
    """Remove a folder tree, as `rm -rf` in a child process (a missing tree or a failure is ignored).

    Not shutil.rmtree: it opens and closes one descriptor per directory, and under gevent's
    monkey patching (gevent >= 25.8) os.close of anything but a regular file only schedules
    the close on the hub's loop. Removing an archive's storage tree (thousands of
    directories) at the end of a run, when the hub may never run again, left every one of
    them open in the run or matrix process, and the next run failed on descriptors above
    1024 (issue 15). A child process keeps the bulk work out of this process's descriptor
    table whether gevent is loaded or not, and costs one fork per tree.
    """
    subprocess.run(["rm", "-rf", "--", str(path)], stdin=subprocess.DEVNULL, check=False)
