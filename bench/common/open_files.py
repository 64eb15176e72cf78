"""The open-files limit, raised at start-up (imports nothing but `resource`: it runs before gevent's patching)."""

from __future__ import annotations

import resource


def raise_open_files_limit() -> None:
    """The soft limit on open descriptors up to the hard limit, as locust does at start-up.

    Each association is a socket, and a run also holds pool files, logs and pipes: the
    usual soft limit of 1024 is near what a large run needs. Where the system refuses, the
    limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
