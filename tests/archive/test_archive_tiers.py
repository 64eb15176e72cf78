"""Storage tiers and full disks: migration under load, A700 on a full disk, a full tier handing over to the next."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers.archive import client, index_rows, start_archive
from helpers.dicomfiles import dataset_bytes, encoded, unique_copies
from helpers.tools import missing
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)


def test_tiers_migrate_while_storing_querying_and_retrieving(tmp_path, tiny_studies):
    config = tmp_path / "tiers.toml"
    config.write_text(
        "migration_interval = 0.2\nmigration_min_age = 0.3\n"
        # A study here is 3.4 MB: the low watermark (4.8 MB) keeps at least one study on the
        # fast tier after every migration, whatever the timing (at 6 MB it could empty it).
        '[[tiers]]\nname = "fast"\npath = "fast"\ncapacity = "12 MB"\nhigh_watermark = 0.7\nlow_watermark = 0.4\n'
        '[[tiers]]\nname = "slow"\npath = "slow"\n'
    )
    archive = start_archive(tmp_path / "archive", "--config", str(config), "--metrics-port", "0")
    templates = sorted((tiny_studies / "study-0000").glob("*.dcm"))
    sent: dict[str, bytes] = {}
    studies: list[str] = []
    problems: list[str] = []
    storing = threading.Event()
    storing.set()

    def store():
        assoc, _ = client(archive, "MODALITY")
        for study_uid, ds in unique_copies(templates, 10):
            if assoc.send_c_store(ds).get("Status") != 0:
                problems.append(f"store of {ds.SOPInstanceUID} failed")
            sent[ds.SOPInstanceUID] = encoded(ds)
            if study_uid not in studies:
                studies.append(study_uid)
        assoc.release()
        storing.clear()

    def query_and_retrieve():
        assoc, received = client(archive, "READER", get_role=True)
        while storing.is_set() or not received:
            if len(studies) < 2:
                time.sleep(0.05)
                continue
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            answers = [s for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
            if answers[-1].Status != 0:
                problems.append(f"C-FIND ended with 0x{answers[-1].Status:04X}")
            get = Dataset()
            get.QueryRetrieveLevel = "STUDY"
            get.StudyInstanceUID = random.choice(studies[:-1])
            statuses = [s.Status for s, _ in assoc.send_c_get(get, StudyRootQueryRetrieveInformationModelGet)]
            if statuses[-1] != 0:
                problems.append(f"C-GET ended with 0x{statuses[-1]:04X}")
        for sop_uid, data in received.items():
            if data != sent.get(sop_uid):
                problems.append(f"C-GET returned different bytes for {sop_uid}")
        assoc.release()

    threads = [threading.Thread(target=store), threading.Thread(target=query_and_retrieve)]
    [t.start() for t in threads]
    [t.join(180) for t in threads]
    try:
        # Wait until migration has settled: below the high watermark and no move for a second.
        deadline, previous = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            status = json.loads(urllib.request.urlopen(f"{archive.metrics_url}/status", timeout=10).read())
            fast = status["tiers"][0]
            now = (fast["used_bytes"], status["migration"]["studies_moved"])
            if now == previous and fast["used_bytes"] <= 0.7 * fast["capacity_bytes"]:
                break
            previous = now
            time.sleep(1.0)
        assert problems == []
        rows = index_rows(archive)
        assert set(rows) == set(sent)  # nothing lost
        assert {tier for _, tier in rows.values()} == {0, 1}  # some studies moved down
        for sop_uid, (path, tier) in rows.items():
            assert Path(path).is_relative_to(tmp_path / ("fast" if tier == 0 else "slow"))
            assert dataset_bytes(Path(path)) == sent[sop_uid]
        assert status["migration"]["studies_moved"] > 0 and fast["used_bytes"] <= 0.7 * fast["capacity_bytes"]
        moved_study = next(
            s
            for s in studies
            if any(
                rows[u][1] == 1
                for u in sent
                if dcmread(Path(rows[u][0]), stop_before_pixels=True).StudyInstanceUID == s
            )
        )
        assoc, received = client(archive, "LATE", get_role=True)
        get = Dataset()
        get.QueryRetrieveLevel = "STUDY"
        get.StudyInstanceUID = moved_study
        assert [s.Status for s, _ in assoc.send_c_get(get, StudyRootQueryRetrieveInformationModelGet)][-1] == 0
        assoc.release()
        assert received and all(sent[u] == data for u, data in received.items())
    finally:
        archive.stop()


def mount_tmpfs(mount_point: Path, options: str) -> Path:
    """A small tmpfs: a disk that really fills up (needs root, as CI has)."""
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        missing(f"cannot mount a tmpfs to fill: {result.stderr.strip()}")
    return mount_point


@pytest.fixture
def tiny_disk(root, tmp_path):
    """A 3 MB tmpfs."""
    mount_point = mount_tmpfs(tmp_path / "tiny-disk", "size=3m")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)])


@pytest.fixture
def no_inodes_left(root, tmp_path):
    """A tmpfs where not one more file can be created (ENOSPC at open)."""
    mount_point = mount_tmpfs(tmp_path / "no-inodes", "size=3m,nr_inodes=3")
    (mount_point / "taken").write_bytes(b"")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)])


def test_full_disk_gets_a700_and_loses_nothing(tmp_path, tiny_disk, tiny_studies):
    config = tmp_path / "disk.toml"
    config.write_text(f'[[tiers]]\nname = "small"\npath = "{tiny_disk}"\n')
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    statuses = []
    try:
        assoc, _ = client(archive)
        for _, ds in unique_copies(sorted(tiny_studies.rglob("*.dcm")), 3):
            statuses.append((ds.SOPInstanceUID, assoc.send_c_store(ds).Status))
        assert assoc.send_c_echo().Status == 0  # still serving
        assoc.release()
        rows = index_rows(archive)
    finally:
        archive.stop()
    assert 0xA700 in [s for _, s in statuses] and 0 in [s for _, s in statuses]
    assert set(rows) == {uid for uid, s in statuses if s == 0}
    assert all(Path(path).is_file() for path, _ in rows.values())
    assert not list(tiny_disk.rglob(".tmp-*"))


@pytest.mark.parametrize("direct_io", [True, False], ids=["o_direct", "page_cache"])
def test_a_file_system_that_fills_mid_stream_hands_the_file_to_the_next_tier(tmp_path, tiny_disk, direct_io):
    from server_under_test.storage.files import TEMP_PREFIX, FileStore

    first, second = FileStore(tiny_disk, direct_io=direct_io), FileStore(tmp_path / "tier2", direct_io=direct_io)
    data = random.Random(3).randbytes(5 << 20)  # more than the 3 MB tmpfs holds
    incoming = first.incoming(b"HEADER", overflow=[second])
    incoming.write([data[i : i + 100_000] for i in range(0, len(data), 100_000)])
    path = second.path_for("1.2", "1.3", "1.4")
    assert incoming.error is None and incoming.store is second
    assert incoming.commit(path, replace=True) == len(data) + 6
    assert path.read_bytes() == b"HEADER" + data
    assert not list(tiny_disk.rglob(f"{TEMP_PREFIX}*")) and not list(second.root.rglob(f"{TEMP_PREFIX}*"))


def test_a_tier_that_cannot_even_create_the_file_hands_it_to_the_next(tmp_path, no_inodes_left):
    from server_under_test.storage.files import FileStore

    first = FileStore(no_inodes_left)  # its .incoming folder takes the last free inode
    second = FileStore(tmp_path / "tier2")
    incoming = first.incoming(b"HEADER", overflow=[second])
    incoming.write([b"dataset"])
    path = second.path_for("1.2", "1.3", "1.4")
    assert incoming.error is None and incoming.store is second
    assert incoming.commit(path, replace=True) == 13 and path.read_bytes() == b"HEADERdataset"


def test_a_full_first_tier_sends_stores_to_the_second_and_loses_nothing(tmp_path, tiny_disk, tiny_studies):
    config = tmp_path / "tiers.toml"
    config.write_text(
        f'[[tiers]]\nname = "small"\npath = "{tiny_disk}"\n\n[[tiers]]\nname = "big"\npath = "{tmp_path / "big"}"\n'
    )
    archive = start_archive(tmp_path / "archive", "--config", str(config))
    sent = {}
    try:
        assoc, _ = client(archive)
        for _, ds in unique_copies(sorted(tiny_studies.rglob("*.dcm")), 3):
            assert assoc.send_c_store(ds).Status == 0
            sent[ds.SOPInstanceUID] = ds.PixelData
        assoc.release()
        rows = index_rows(archive)
    finally:
        archive.stop()
    assert set(rows) == set(sent)
    assert {tier for _, tier in rows.values()} == {0, 1}  # both tiers hold instances
    assert all(dcmread(path).PixelData == sent[uid] for uid, (path, _) in rows.items())
    assert not list(tiny_disk.rglob(".tmp-*")) and not list((tmp_path / "big").rglob(".tmp-*"))
