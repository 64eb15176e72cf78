"""A C-MOVE of thousands of small instances: every sub-operation counted, and no memory held per instance.

The archive (a real process) moves one study of tiny CT instances to the harness's Storage
SCP (in this process); what the SCP keeps until the workstation collects it is a tally, so
the objects it holds after a 1,500-instance move are those of a 150-instance move (counted
with the garbage collector's list of live containers: an Arrival per instance would show).
"""

import gc
import time

import pytest
from helpers.archive import start_archive
from pydicom.uid import generate_uid

from bench.dicom.arrivals import Arrival, Gathered
from bench.dicom.peer import Peer
from bench.dicom.scu import ServiceUser, query_proposals, storage_proposals, study_identifier
from bench.dicom.storage_scp import StorageSCP
from bench.studies.encode import SYNTAXES, attach_pixel_data
from bench.studies.iods import ct
from bench.studies.iods.common import InstanceKeys, SeriesKeys
from bench.studies.pool import PooledInstance, TemplateInstance
from bench.studies.profile import SeriesSpec, StudyProfile
from bench.studies.xa import StudyKeys

SMALL, LARGE = 150, 1500


def tiny_ct_template() -> TemplateInstance:
    """One 16x16 CT instance, encoded once: copies of it differ only in their UIDs (the pool's fast path)."""
    spec = SeriesSpec(description="tiny", iod="ct", rows=16, columns=16, instances={"min": 1, "max": 1})
    profile = StudyProfile(modality="CT", series=[spec], instances_per_study={"min": 1, "max": 1})
    study = StudyKeys("TINY^CT", "TINY", "19700101", "O", "1.2.3", "1", "A1", "20260101", "120000")
    series = SeriesKeys("1.2.3.1", 1, "1.2.3.2", "120000")
    instance = InstanceKeys("1.2.3.1.1", 1, 1, 0.5, "120000")
    ds = ct.header(spec, profile, study, series, instance, 1)
    attach_pixel_data(
        ds, ct.pixels(spec, 0.5, __import__("numpy").random.default_rng(1)).tobytes(), SYNTAXES["explicit"]
    )
    return TemplateInstance.from_dataset(ds)


def store_study(user: ServiceUser, template: TemplateInstance, count: int) -> tuple[str, int]:
    """(Study Instance UID, bytes sent) of `count` copies stored in one study."""
    study, sent = generate_uid(), 0
    changes = {"StudyInstanceUID": study, "SeriesInstanceUID": generate_uid()}
    for _ in range(count):
        instance = PooledInstance(template, {**changes, "SOPInstanceUID": generate_uid()})
        chunks = instance.encoded_chunks()
        assert user.store(instance.sop_class_uid, instance.sop_instance_uid, instance.transfer_syntax_uid, chunks) == 0
        sent += instance.size
    return study, sent


def live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def held_after_move(user: ServiceUser, scp: StorageSCP, study: str) -> tuple[int, Gathered]:
    """(live objects added by the move, before collecting its arrivals; the tally collected)."""
    before = live_objects()
    message_id, outcome = user.move(study_identifier(study), scp.ae_title)
    held = live_objects() - before
    outcome.gathered = scp.collect(message_id, study)
    assert outcome.mismatch() == "" and outcome.status == 0
    return held, outcome.gathered


@pytest.mark.slow
def test_a_large_move_is_counted_whole_and_held_as_a_tally(tmp_path):
    scp = StorageSCP("GATHER", timeout=30).start()
    config = tmp_path / "archive.toml"
    config.write_text(f'[destinations.GATHER]\nhost = "127.0.0.1"\nport = {scp.port}\n')
    archive = start_archive(tmp_path / "archive", "--no-fsync", "--config", str(config))
    template = tiny_ct_template()
    proposals = query_proposals() + storage_proposals([ct.SOP_CLASS], [SYNTAXES["explicit"].uid])
    user = ServiceUser(Peer("127.0.0.1", archive.port, archive.ae_title), "GATHERER", proposals, timeout=60)
    started = time.perf_counter()
    try:
        user.connect()
        (small, _), (large, large_bytes) = store_study(user, template, SMALL), store_study(user, template, LARGE)
        stored = time.perf_counter()
        small_held, small_gathered = held_after_move(user, scp, small)
        large_held, large_gathered = held_after_move(user, scp, large)
        user.release()
        print(f"stored in {stored - started:.1f} s, moved in {time.perf_counter() - stored:.1f} s")
    finally:
        archive.stop()
        scp.stop()
    assert (small_gathered.instances, large_gathered.instances) == (SMALL, LARGE)
    assert large_gathered.bytes == large_bytes
    print(f"live objects held: {small_held} after {SMALL} instances, {large_held} after {LARGE}")
    assert large_held - small_held < (LARGE - SMALL) / 10, (small_held, large_held)
    assert large_gathered.hashed == []  # nothing kept per instance unless asked to hash


def test_only_hashed_arrivals_are_kept_one_by_one():
    gathered = Gathered()
    for n in range(1000):
        gathered.add(Arrival(f"1.2.{n}", "1.2", "1.3", frames=2, bytes=10, digest="ab" if n % 100 == 0 else ""))
    assert (gathered.instances, gathered.frames, gathered.bytes, len(gathered.hashed)) == (1000, 2000, 10000, 10)
    both = gathered.merge(Gathered(1, 1, 5, []))
    assert (both.instances, both.frames, both.bytes, len(both.hashed)) == (1001, 2001, 10005, 10)
