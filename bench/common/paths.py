"""Where pacsbench keeps what it builds once: the cache folder (study pools, calibrations, VM images)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$PACSBENCH_CACHE, else $XDG_CACHE_HOME/pacsbench, else ~/.cache/pacsbench."""
    if os.environ.get("PACSBENCH_CACHE"):
        return Path(os.environ["PACSBENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pacsbench"
