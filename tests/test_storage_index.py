import sqlite3

import pytest

from server_under_test.index import Index, InstanceRecord, create_schema
from server_under_test.storage import TEMP_PREFIX, BadUID, FileStore


def _record(sop="1.2.3.4", path="/x", series="1.2.3.2", study="1.2.3.1") -> InstanceRecord:
    return InstanceRecord(
        patient_id="P1", patient_name="DOE^JANE", birth_date="19700101", sex="F", study_uid=study,
        study_date="20250101", study_time="120000", accession="A1", study_id="1", study_description="d",
        referring="", series_uid=series, modality="XA", series_number="1", body_part="HEAD", series_description="",
        sop_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.12.1", instance_number="1",
        transfer_syntax="1.2.840.10008.1.2.1", frames=10, size=123, tier=0, path=path,
    )


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path):
    store = FileStore(tmp_path)
    path = store.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    size = store.write(path, [b"abc", b"def"])
    assert size == 6 and path.read_bytes() == b"abcdef"
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


@pytest.mark.parametrize("uid", ["../../etc", "1.2.abc", "", "1." * 40, "1.2.3/4"])
def test_uids_that_are_not_uids_never_become_paths(tmp_path, uid):
    with pytest.raises(BadUID):
        FileStore(tmp_path).path_for(uid, "1.2", "1.3")


def test_failed_write_removes_the_temp_file(tmp_path):
    store = FileStore(tmp_path)
    path = store.path_for("1.2", "1.3", "1.4")
    with pytest.raises(TypeError):
        store.write(path, [b"first chunk", None])  # the second chunk fails after bytes were written
    assert not path.exists() and not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_leftover_temp_files_are_removed_at_start(tmp_path):
    (tmp_path / "1.2").mkdir()
    (tmp_path / "1.2" / f"{TEMP_PREFIX}abc").write_bytes(b"partial")
    assert FileStore(tmp_path).remove_leftover_temp_files() == 1
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_index_keeps_the_hierarchy_and_counts_in_wal_mode(tmp_path):
    create_schema(tmp_path / "index.sqlite")
    index = Index(tmp_path / "index.sqlite")
    index.add(_record("1.2.3.4", path="/a"))
    index.add(_record("1.2.3.5", path="/b"))
    assert index.add(_record("1.2.3.5", path="/c")) == "/b"  # a resend replaces, and names the old file
    index.add(_record("1.2.3.6", series="1.2.3.9"))
    assert index.count_instances() == 3
    assert index.tier_usage() == {0: (3 * 123, 3)}
    index.close()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT num_series, num_instances, modalities FROM study").fetchone() == (2, 3, "XA")
    assert db.execute("SELECT num_studies, num_series, num_instances FROM patient").fetchone() == (1, 2, 3)
    assert db.execute("SELECT num_instances FROM series ORDER BY series_uid").fetchall() == [(2,), (1,)]


def test_group_commit_serves_concurrent_writers(tmp_path):
    import threading

    create_schema(tmp_path / "index.sqlite")
    index = Index(tmp_path / "index.sqlite")
    threads = [threading.Thread(target=index.add, args=(_record(f"1.2.3.{i}", path=f"/{i}"),)) for i in range(40)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert index.count_instances() == 40 and index.commits <= 40
    index.close()
