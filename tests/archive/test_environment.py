"""The storage facts the archive reports (and the harness samples): the mount, the file system, the disk."""

from pathlib import Path

import psutil
import pytest

from server_under_test.environment import storage_device, whole_disk


def test_a_folder_that_is_a_mount_point_is_its_own_file_system():
    # /proc is a mount point of its own on every Linux machine; a tier mounted at its path is the same case.
    described = storage_device(Path("/proc"))
    assert (described["mount"], described["fs_type"]) == ("/proc", "proc")
    assert described["device"] == "" and whole_disk(Path("/proc")) is None  # no block device under it


def test_a_folder_below_a_mount_point_is_on_that_mount():
    described = storage_device(Path("/proc/self"))
    assert (described["mount"], described["fs_type"]) == ("/proc", "proc")


def test_the_disk_of_a_folder_is_named_as_the_kernel_counts_its_io(tmp_path):
    disk = whole_disk(tmp_path)
    if disk is None:
        pytest.skip(f"{tmp_path} is on a virtual file system (no block device)")
    # The resource sampler reads this disk's I/O counters by that name.
    assert disk.name in psutil.disk_io_counters(perdisk=True)
    assert not (disk / "partition").exists()  # a partition's queue is its disk's: the whole disk is named
    assert storage_device(tmp_path)["device"]  # the device itself (maybe a partition of that disk)


def test_an_ext4_data_disk_says_whether_it_keeps_a_journal(tmp_path):
    described = storage_device(tmp_path)
    if described["fs_type"] != "ext4":
        assert described["fs_journal"] is None
        return
    # The kernel names the journal's thread, or "<none>" (this project's CI machine: ext4 without one).
    task = Path(f"/sys/fs/ext4/{described['device']}/journal_task").read_text().strip()
    assert described["fs_journal"] is (task != "<none>")
