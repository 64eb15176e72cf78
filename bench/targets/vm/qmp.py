"""A tiny QMP client (QEMU's JSON machine protocol on a unix socket): enough for faults on a running guest.

One connection per command: the greeting, `qmp_capabilities`, the command, its answer. Events
QEMU sends in between (e.g. NIC_RX_FILTER_CHANGED) are skipped.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from bench.common.errors import UserError

QMP_TIMEOUT = 10.0
SUN_PATH_MAX = 107  # a unix socket's path, in bytes, less the final NUL (sockaddr_un.sun_path)


def qmp_command(path: Path, command: str, arguments: dict | None = None, timeout: float = QMP_TIMEOUT):
    """Run one QMP command on the socket at `path`; its "return" value, or a UserError with QEMU's error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise UserError(f"QMP {path}: {exc.strerror or exc}") from None
        lines = sock.makefile("rb")
        _read_answer(lines, path, greeting=True)
        for execute, args in (("qmp_capabilities", None), (command, arguments)):
            message = {"execute": execute, **({"arguments": args} if args else {})}
            sock.sendall(json.dumps(message).encode() + b"\n")
            answer = _read_answer(lines, path)
        return answer


def _read_answer(lines, path: Path, greeting: bool = False):
    """The next greeting or answer on the connection, skipping asynchronous events."""
    for line in lines:
        message = json.loads(line)
        if greeting and "QMP" in message:
            return message["QMP"]
        if "error" in message:
            raise UserError(f"QMP {path}: {message['error'].get('desc', message['error'])}")
        if "return" in message:
            return message["return"]
    raise UserError(f"QMP {path}: QEMU closed the connection")
