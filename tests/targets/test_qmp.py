"""The QMP client against a real QEMU: one held at its first instruction (-S), so no guest boots (a second)."""

from __future__ import annotations

import subprocess
import time

import pytest

from bench.common.errors import UserError
from bench.targets.vm.qemu import CTRL_ALT_DEL, NIC_ID, qmp_socket_path
from bench.targets.vm.qmp import qmp_command


@pytest.fixture
def held_qemu(qemu, tmp_path):
    """QEMU with the guests' NIC id and a QMP socket, stopped before the first instruction."""
    socket, _ = qmp_socket_path(tmp_path)
    process = subprocess.Popen(
        [
            qemu,
            "-S",
            "-nodefaults",
            "-display",
            "none",
            "-machine",
            "q35,accel=tcg",
            "-netdev",
            "user,id=net0",
            "-device",
            f"virtio-net-pci,netdev=net0,id={NIC_ID}",
            "-qmp",
            f"unix:{socket},server=on,wait=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # the socket appears once QEMU has parsed its options
            if socket.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        yield socket
    finally:
        process.kill()
        process.wait()


def test_qmp_takes_the_nic_link_down_and_up_and_presses_ctrl_alt_del(held_qemu):
    assert qmp_command(held_qemu, "query-status")["status"] == "prelaunch"
    assert qmp_command(held_qemu, "set_link", {"name": NIC_ID, "up": False}) == {}
    assert qmp_command(held_qemu, "set_link", {"name": NIC_ID, "up": True}) == {}
    assert qmp_command(held_qemu, "send-key", {"keys": CTRL_ALT_DEL}) == {}  # a stop fault's shutdown request


def test_qmp_errors_are_one_line_user_errors(held_qemu, tmp_path):
    with pytest.raises(UserError, match="Device 'eth9' not found"):
        qmp_command(held_qemu, "set_link", {"name": "eth9", "up": False})
    with pytest.raises(UserError, match="QMP .*nothing.sock: No such file or directory"):
        qmp_command(tmp_path / "nothing.sock", "query-status")


def test_a_run_folder_too_deep_for_a_unix_socket_gets_a_short_one(tmp_path):
    deep = tmp_path / ("d" * 120)
    socket, folder = qmp_socket_path(deep)
    assert folder is not None and socket.parent == folder and len(str(socket)) < 100
    folder.rmdir()
    assert qmp_socket_path(tmp_path) == (tmp_path / "qmp.sock", None)
