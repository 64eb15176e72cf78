import errno
import os
import random
import resource
import shutil
import signal
import sqlite3
import tempfile
from dataclasses import replace
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    XRayAngiographicImageStorage,
)

from server_under_test.storage.files import (
    DIRECT_ALIGNMENT,
    PADDING_MARK,
    STAGING_BUFFER,
    TEMP_PREFIX,
    TRAILING_PADDING,
    AlreadyStored,
    BadUID,
    FileStore,
    received_length,
    supports_direct_io,
    trailing_padding,
)
from server_under_test.storage.index import Index, InstanceRecord, apply_record, connect, create_schema


def _record(sop="1.2.3.4", path="/x", series="1.2.3.2", study="1.2.3.1") -> InstanceRecord:
    return InstanceRecord(
        patient_id="P1",
        patient_name="DOE^JANE",
        birth_date="19700101",
        sex="F",
        study_uid=study,
        study_date="20250101",
        study_time="120000",
        accession="A1",
        study_id="1",
        study_description="d",
        referring="",
        series_uid=series,
        modality="XA",
        series_number="1",
        body_part="HEAD",
        series_description="",
        sop_uid=sop,
        sop_class_uid=XRayAngiographicImageStorage,
        instance_number="1",
        transfer_syntax=ExplicitVRLittleEndian,
        frames=10,
        size=123,
        tier=0,
        path=path,
    )


def _stream(store: FileStore, path, chunks: list, header: bytes = b"") -> int:
    incoming = store.incoming(header)
    incoming.write(chunks)
    return incoming.commit(path, replace=True)


def _store(root, direct_io: bool = True, unnamed: bool = True) -> FileStore:
    """A file store; unnamed=False: as on a file system without O_TMPFILE (temporary names in .incoming)."""
    store = FileStore(root, direct_io=direct_io)
    store.unnamed = store.unnamed and unnamed
    return store


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "temp_name"])
@pytest.mark.parametrize("direct_io", [True, False], ids=["o_direct", "page_cache"])
@pytest.mark.parametrize(
    "size", [0, 1, 4095, 4096, 4097, STAGING_BUFFER - 1, STAGING_BUFFER, STAGING_BUFFER + 1, 2 * STAGING_BUFFER + 123]
)
def test_streamed_files_hold_exactly_the_bytes_sent(tmp_path, direct_io, unnamed, size):
    store = _store(tmp_path, direct_io, unnamed)
    assert store.direct_io == (direct_io and supports_direct_io(tmp_path))
    data = random.Random(size).randbytes(size)
    cuts = sorted(random.Random(size + 1).sample(range(size + 1), min(size + 1, 7)))
    chunks = [memoryview(data)[a:b] for a, b in zip([0, *cuts], [*cuts, size])]
    path = store.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert _stream(store, path, chunks, header=b"HEAD") == size + 4
    assert path.read_bytes() == b"HEAD" + data
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_the_default_tier_takes_o_direct_and_unnamed_files_here(tmp_path):
    # ext4 here and in CI: if this fails, ingest silently falls back to the page cache, or to temporary names.
    store = FileStore(tmp_path)
    assert store.direct_io and store.unnamed
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))  # the probes leave nothing


def test_an_unnamed_file_gets_no_name_until_it_is_complete_and_replaces_an_old_one_only_once_synced(tmp_path):
    store = FileStore(tmp_path)
    path = store.path_for("1.2", "1.3", "1.4")
    first = store.incoming(b"old")
    first.write([b"-first"])
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # being received: no name anywhere
    assert first.commit(path, replace=False) == 9
    first.release()
    second = store.incoming(b"new")
    second.write([b"-second"])
    with pytest.raises(AlreadyStored):  # reject / keep-first: the name is taken, the old file stays
        second.commit(path, replace=False, hold=True)
    assert path.read_bytes() == b"old-first"
    assert second.replace_leftover(path) == 10  # (a file without a row: replaced)
    second.release()
    assert path.read_bytes() == b"new-second"
    third = store.incoming(b"3rd")
    third.write([b"-third"])
    assert third.commit(path, replace=True) == 9  # overwrite: over the old name, through a synced temporary name
    assert path.read_bytes() == b"3rd-third"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary name left beside it
    fourth = store.incoming(b"4th")
    fourth.write([b"-gone"])
    fourth.discard()
    assert path.read_bytes() == b"3rd-third" and [p.name for p in path.parent.iterdir()] == [path.name]


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "temp_name"])
def test_a_discarded_file_leaves_no_file_and_no_descriptor(tmp_path, unnamed):
    store = _store(tmp_path, unnamed=unnamed)
    incoming = store.incoming(b"header")
    incoming.write([bytes(5000)])
    assert (not incoming.path.name.startswith(TEMP_PREFIX)) == unnamed  # /proc/self/fd/N, or a temporary name
    assert incoming.path.exists()
    fd = incoming.fd
    incoming.discard()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    with pytest.raises(OSError):
        os.fstat(fd)


def test_copy_in_is_atomic_and_leaves_no_temp_file(tmp_path):
    source = tmp_path / "source.dcm"
    source.write_bytes(bytes(range(256)) * 20000)
    store = FileStore(tmp_path / "tier2")
    path = store.path_for("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert store.copy_in(source, path) == 256 * 20000
    assert path.read_bytes() == source.read_bytes()
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


@pytest.mark.parametrize("uid", ["../../etc", "1.2.abc", "", "1." * 40, "1.2.3/4"])
def test_uids_that_are_not_uids_never_become_paths(tmp_path, uid):
    with pytest.raises(BadUID):
        FileStore(tmp_path).path_for(uid, "1.2", "1.3")


@pytest.mark.parametrize("direct_io", [True, False], ids=["o_direct", "page_cache"])
def test_a_write_the_os_refuses_is_remembered_and_commit_leaves_nothing(tmp_path, direct_io):
    store = FileStore(tmp_path, direct_io=direct_io)
    path = store.path_for("1.2", "1.3", "1.4")
    incoming = store.incoming(b"header")
    # A real refusal from the kernel: files may not grow past 1 MB (EFBIG) while this runs.
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        incoming.write([bytes(3 << 20)])
        incoming.finish()  # every write, the write-behind ones included, happens under the limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert isinstance(incoming.error, OSError) and incoming.error.errno == errno.EFBIG
    with pytest.raises(OSError):
        incoming.commit(path, replace=True)
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


def _prefill_study(path, study: str, series: str, instances: int) -> None:
    """`instances` rows of one study and series, in one transaction (apply_record: the rows a store commits)."""
    db = connect(path, "OFF")
    db.execute("BEGIN")
    for i in range(instances):
        apply_record(db, _record(f"{study}.{i}", path=f"/{study}/{i}", series=series, study=study))
    db.execute("COMMIT")
    db.close()


def _work_of_one_store(index: Index, record: InstanceRecord) -> tuple[int, int]:
    """(SQL statements, SQLite virtual machine steps) of the group commit that adds `record`.

    VM steps, not time: a scan of the study's instances (a count, a listing) shows as steps
    growing with the study, however fast the machine."""
    statements, steps = [], [0]

    def step() -> int:
        steps[0] += 1
        return 0  # go on

    index._writer.set_trace_callback(statements.append)  # the connection the group commit writes with
    index._writer.set_progress_handler(step, 1)
    try:
        index.add(record)
    finally:
        index._writer.set_trace_callback(None)
        index._writer.set_progress_handler(None, 1)
    return len(statements), steps[0]


@pytest.mark.parametrize("capacity", [0, 10**12], ids=["unbounded", "with_capacity"])
def test_the_index_work_of_a_store_does_not_grow_with_the_study(tmp_path, capacity):
    """A 24,000-instance study must cost the same per instance as a 10-instance one: the row
    the 2,001st instance of a study commits takes the same statements and VM steps as the
    11th's (counts live in the study and series rows; nothing counts or lists instances)."""
    path = tmp_path / "index.sqlite"
    create_schema(path)
    _prefill_study(path, "1.2.10", "1.2.10.1", 10)
    _prefill_study(path, "1.2.2000", "1.2.2000.1", 2000)
    index = Index(path, capacity=capacity)
    for study in ("1.2.10", "1.2.2000"):  # warm both studies' pages into the writer's cache alike
        index.add(_record(f"{study}.warm", path=f"/{study}/warm", series=f"{study}.1", study=study))
    small = _work_of_one_store(index, _record("1.2.10.new", path="/s/new", series="1.2.10.1", study="1.2.10"))
    large = _work_of_one_store(index, _record("1.2.2000.new", path="/l/new", series="1.2.2000.1", study="1.2.2000"))
    index.close()
    assert small[0] == large[0], f"statements: {small[0]} for a 10-instance study, {large[0]} for 2,000"
    assert large[1] <= small[1] * 1.05, f"VM steps: {small[1]} for a 10-instance study, {large[1]} for 2,000"
    db = sqlite3.connect(path)
    assert db.execute("SELECT num_instances FROM study WHERE study_uid='1.2.2000'").fetchone() == (2002,)


def test_an_instance_into_an_indexed_series_rewrites_no_unchanged_row(tmp_path):
    """Rows already holding what a store would write are not written again: each rewrite is one more 4 KB page in
    the WAL per instance. Changed attributes and a study's updated_at older than a second still are."""
    path = tmp_path / "index.sqlite"
    create_schema(path)
    db = connect(path)
    apply_record(db, _record(sop="1.2.3.4.1"))
    before = db.total_changes
    apply_record(db, _record(sop="1.2.3.4.2"))
    # the instance row, the series', study's and patient's counts, the tier's usage; at most the study's
    # updated_at besides (when the second store came a second after the first)
    assert db.total_changes - before in (5, 6)
    db.execute("UPDATE study SET updated_at = updated_at - 5")
    apply_record(db, replace(_record(sop="1.2.3.4.3"), study_description="new"))
    assert db.execute("SELECT description, num_instances FROM study").fetchone() == ("new", 3)
    assert db.execute("SELECT num_instances, num_series, num_studies FROM patient").fetchone() == (3, 1, 1)
    assert db.execute("SELECT num_instances FROM series").fetchone() == (3,)
    assert db.execute("SELECT files, bytes FROM tier_usage").fetchone() == (3, 3 * 123)
    updated = db.execute("SELECT updated_at FROM study").fetchone()[0]
    apply_record(db, replace(_record(sop="1.2.3.4.4"), study_description="new"))  # within the second: it stays
    assert db.execute("SELECT updated_at FROM study").fetchone()[0] == updated
    db.close()


def _commit_new(store: FileStore, sop: str, sync_folder: bool) -> bool:
    incoming = store.incoming(b"head")
    incoming.write([b"-body"])
    incoming.commit(store.path_for("1.2", "1.3", sop), replace=False, sync_folder=sync_folder)
    return incoming.name_durable


def test_the_folder_fsync_is_left_out_only_where_the_files_fsync_made_its_new_name_durable(tmp_path):
    store = FileStore(tmp_path)
    assert store.file_system == "ext4" and store.names_durable_with_files  # here and in CI
    assert _commit_new(store, "1.4.1", sync_folder=False)  # linked, then fsynced: ext4 wrote the folder with it
    replacing = store.incoming(b"new")
    replacing.write([b"-over"])
    replacing.commit(store.path_for("1.2", "1.3", "1.4.1"), replace=True, sync_folder=False)
    assert not replacing.name_durable  # renamed after its fsync: the folder still has to be fsynced
    store.unnamed = False  # as without O_TMPFILE: fsynced under a temporary name, moved afterwards
    assert not _commit_new(store, "1.4.2", sync_folder=False)
    assert _commit_new(store, "1.4.3", sync_folder=True)  # the store fsynced the folder itself


def test_elsewhere_every_new_name_waits_for_the_folders_fsync():
    shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        store = FileStore(shm)
        assert store.file_system == "tmpfs" and store.unnamed and not store.names_durable_with_files
        assert not _commit_new(store, "1.4.1", sync_folder=False)
        assert _commit_new(store, "1.4.2", sync_folder=True)
    finally:
        shutil.rmtree(shm)


SYNTAXES_PADDED = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, JPEGBaseline8Bit]


@pytest.mark.parametrize("syntax", SYNTAXES_PADDED)
@given(text_length=st.integers(0, 9000))
@settings(max_examples=25, deadline=None)
def test_the_trailing_padding_is_a_valid_last_element_and_received_length_finds_what_came_before(syntax, text_length):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = XRayAngiographicImageStorage, "1.2.3"
    ds.PatientID = "P"
    ds.ImageComments = "c" * (text_length + text_length % 2)  # even lengths, as every element's
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    received = buffer.getvalue()
    padding = trailing_padding(len(received), syntax)
    assert padding is not None and (len(received) + len(padding)) % DIRECT_ALIGNMENT == 0
    read = dcmread(BytesIO(received + padding))
    assert list(read.keys())[-1] == TRAILING_PADDING and read[TRAILING_PADDING].VR == "OB"
    assert read.ImageComments == ds.ImageComments and read.PatientID == "P"
    with tempfile.TemporaryFile() as f:
        f.write(received + padding)
        f.flush()
        assert received_length(f.fileno()) == len(received)


def test_no_padding_where_none_may_follow_and_a_file_without_the_mark_is_read_whole(tmp_path):
    assert trailing_padding(1000, DeflatedExplicitVRLittleEndian) is None  # nothing after the deflated stream
    assert trailing_padding(1001, ExplicitVRLittleEndian) is None  # an odd length: no valid dataset
    path = tmp_path / "f"
    for data in (bytes(8192), b"x" * 4096, bytes(4096 - 24) + PADDING_MARK + (5000).to_bytes(8, "little")):
        path.write_bytes(data)  # whole blocks, without the mark or with a length that cannot be the file's
        with path.open("rb") as f:
            assert received_length(f.fileno()) == len(data)


@pytest.mark.parametrize("direct_io", [True, False], ids=["o_direct", "page_cache"])
@pytest.mark.parametrize("size", [1, 4000, 4072, 4096, 4097, STAGING_BUFFER - 2, STAGING_BUFFER, STAGING_BUFFER + 2])
def test_a_received_file_is_padded_to_whole_blocks_with_o_direct_and_retrieval_length_is_what_came(
    tmp_path, direct_io, size
):
    store = _store(tmp_path, direct_io)
    data = random.Random(size).randbytes(size - size % 2)
    incoming = store.incoming(b"HEAD", transfer_syntax=ExplicitVRLittleEndian)
    incoming.write([data])
    path = store.path_for("1.2", "1.3", "1.4")
    stored = incoming.commit(path, replace=True)
    on_disk = path.read_bytes()
    assert stored == len(on_disk) and on_disk[: 4 + len(data)] == b"HEAD" + data
    with path.open("rb") as f:
        assert received_length(f.fileno()) == 4 + len(data)
    padded = store.direct_io and (4 + len(data)) % DIRECT_ALIGNMENT != 0
    fits = (4 + len(data)) % STAGING_BUFFER + 4096 + 64 <= STAGING_BUFFER  # room in the staging buffer
    assert (len(on_disk) % DIRECT_ALIGNMENT == 0 and len(on_disk) > 4 + len(data)) == (padded and fits)
