"""The file-creation probe the ingest benchmark runs before each round (bench/benchmarks/file_creation.py)."""

import os
import shutil
from pathlib import Path

from bench.benchmarks.file_creation import PROBE_FILES, TMPFS, creation_cost, input_folder, wait_until_cheap


def test_the_probe_measures_cpu_per_file_and_keeps_its_files(tmp_path):
    first, second = creation_cost(tmp_path), creation_cost(tmp_path, files=8)
    assert first > 0 and second > 0
    probes = sorted(tmp_path.iterdir())
    # Deleting them would make the next creations dearer on ext4 without a journal: they stay.
    assert sorted(len(list(p.iterdir())) for p in probes) == [8, PROBE_FILES]


def test_no_wait_when_told_not_to(tmp_path):
    said = []
    cost = wait_until_cheap(tmp_path, 0, said.append)
    assert cost > 0 and not said  # one probe, and no promise of a wait


def test_inputs_go_to_tmpfs_when_it_has_room():
    folder = input_folder(1e6)
    try:
        if os.path.isdir(TMPFS) and shutil.disk_usage(TMPFS).free > 2e6:
            assert folder is not None and folder.parent == Path(TMPFS) and folder.is_dir()
        else:
            assert folder is None
        assert input_folder(float(shutil.disk_usage("/").total) * 1e3) is None  # never more than it can hold
    finally:
        if folder is not None:
            shutil.rmtree(folder)
