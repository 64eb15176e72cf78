"""Modality profiles (CT, MR, PET-CT, DX, MG, US): valid IODs, the sizes their profiles promise, unique pool copies.

Each profile is generated once, shrunk with its `scale` (a few instances per series), so the
thousands-of-instances shapes cost little here.
"""

import io
from collections import defaultdict

import pytest
from helpers.archive import start_archive
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset

from bench.common.errors import UserError
from bench.dicom.peer import Peer
from bench.dicom.scu import ServiceUser, query_proposals, storage_proposals, study_identifier
from bench.studies.pool import StudyPool
from bench.studies.profile import StudyProfile, available_profiles, load_profile
from bench.studies.series import plan_studies

MODALITY_PROFILES = available_profiles(StudyProfile)
SMALL = 0.004  # of each series' instances (at least one each)
ENHANCED = ["ct-enhanced", "mr-enhanced", "mg-tomo"]  # UIDs inside their functional groups and dimensions


@pytest.fixture(scope="module")
def small_pools():
    """A pool of one small study per modality profile: {profile: pool}."""
    return {
        name: StudyPool.prepare(load_profile(name).scaled(SMALL), 1, 5, progress=False) for name in MODALITY_PROFILES
    }


@pytest.fixture(scope="module")
def small_studies(small_pools):
    """One small study per modality profile: {profile: folder of the study}."""
    return {name: pool.folder / "study-0000" for name, pool in small_pools.items()}


def test_the_modality_profiles_are_shipped():
    assert {"ct", "ct-enhanced", "mr", "mr-enhanced", "pet-ct", "pet-ct-large", "dx", "mg", "us"} <= set(
        MODALITY_PROFILES
    )


@pytest.mark.parametrize("name", MODALITY_PROFILES)
def test_one_instance_of_each_series_has_no_dciodvfy_errors(dciodvfy, small_studies, name):
    """Errors never; the warnings each profile's comment lists and justifies, no others."""
    firsts = sorted(small_studies[name].glob("*-i000001.dcm"))
    assert firsts
    allowed = load_profile(name).dciodvfy_warnings
    for path in firsts:
        problems = dciodvfy.problems(path)
        assert [p for p in problems if p.startswith("Error")] == [], path
        assert [p for p in problems if p not in allowed] == [], path


@pytest.mark.parametrize("name", MODALITY_PROFILES)
def test_a_study_has_the_profiles_series_with_distinct_instances(small_studies, name):
    profile = load_profile(name)
    datasets = [dcmread(p, stop_before_pixels=True) for p in sorted(small_studies[name].glob("*.dcm"))]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    series = {ds.SeriesInstanceUID for ds in datasets}
    required = sum(1 for s in profile.series if s.chance == 1.0)
    assert required <= len(series) <= len(profile.series)
    assert {ds.Modality for ds in datasets} <= {"CT", "MR", "PT", "DX", "MG", "US"}


def test_scale_shrinks_instance_counts_and_keeps_one_per_series():
    profile = load_profile("ct")
    full = plan_studies(profile, seed=1, count=3)
    small = plan_studies(profile.scaled(0.01), seed=1, count=3)
    for big, little in zip(full, small):
        assert [s.spec.description for s in big.series] == [s.spec.description for s in little.series]
        assert little.instances < big.instances / 20
        assert all(s.instances >= 1 for s in little.series)


@pytest.mark.parametrize("name", MODALITY_PROFILES)
def test_planned_study_sizes_match_the_profile_comment(name):
    """The range the profile's comment cites (instances per study) holds for 50 planned studies."""
    profile = load_profile(name)
    low, high = profile.instances_per_study.min, profile.instances_per_study.max
    counts = [p.instances for p in plan_studies(profile, seed=2, count=50)]
    assert low <= min(counts) and max(counts) <= high, (min(counts), max(counts))


def test_pool_copies_of_a_ct_study_get_new_series_frame_of_reference_and_instance_uids():
    pool = StudyPool.prepare(load_profile("ct").scaled(0.01), size=1, seed=7, progress=False)
    template = pool.studies[0]
    first, second = pool.next_study(), pool.next_study()
    for copy in (first, second):
        decoded = [dcmread(io.BytesIO(b"".join(i.encoded_chunks())), force=True) for i in copy]
        template_series = {str(t.dataset.SeriesInstanceUID) for t in template}
        copy_series = {str(d.SeriesInstanceUID) for d in decoded}
        assert len(copy_series) == len(template_series) and not copy_series & template_series
        assert len({str(d.FrameOfReferenceUID) for d in decoded}) == 1
        assert str(decoded[0].FrameOfReferenceUID) != str(template[0].dataset.FrameOfReferenceUID)
        assert len({str(d.StudyInstanceUID) for d in decoded}) == 1
    uids = [i.sop_instance_uid for i in first + second]
    assert len(set(uids)) == len(uids)
    assert first[0].changes["FrameOfReferenceUID"] != second[0].changes["FrameOfReferenceUID"]


def test_pool_instances_of_a_series_share_their_distinct_images_in_memory():
    pool = StudyPool.prepare(load_profile("ct").scaled(0.1), size=1, seed=8, progress=False)
    study = pool.studies[0]
    views = {id(t.pixel_chunks[1].obj) for t in study}
    assert len(views) < len(study)
    decoded = dcmread(io.BytesIO(b"".join(pool.next_study()[-1].encoded_chunks())), force=True)
    decoded.file_meta = FileMetaDataset()
    decoded.file_meta.TransferSyntaxUID = study[-1].dataset.file_meta.TransferSyntaxUID
    assert decoded.PixelData == study[-1].dataset.PixelData


def test_scale_on_a_dsa_profile_is_a_user_error(capsys):
    from bench.cli import main

    assert main(["generate", "--profile", "tiny", "--scale", "0.5", "--out", "/nonexistent/x"]) == 2
    assert "DSA profile" in capsys.readouterr().err


def test_bad_scale_is_refused():
    with pytest.raises(UserError):
        load_profile("ct").scaled(0)


def _uids(ds, path=()) -> dict[tuple, str]:
    """Every UI value of a data set at any depth, by its path (keywords and item numbers)."""
    found = {}
    for element in ds:
        if element.VR == "SQ":
            for n, item in enumerate(element.value):
                found |= _uids(item, (*path, element.keyword, n))
        elif element.VR == "UI" and element.value:
            found[(*path, element.keyword)] = str(element.value)
    return found


def _decoded(instance):
    return dcmread(io.BytesIO(b"".join(instance.part10_chunks())))


@pytest.mark.parametrize("name", MODALITY_PROFILES)
def test_two_copies_share_no_uid_but_sop_classes_at_any_depth_and_rename_each_uid_alike(small_pools, name):
    """A copy is a new study of a new patient: every UID that names an instance, series, study, frame of reference,
    dimension organization or irradiation event is new, at any depth; a UID the template repeats is renewed to one new
    UID wherever it stands, and the pydicom dataset of a copy says what its bytes say."""
    pool = small_pools[name]
    template = [_uids(t.dataset) for t in pool.studies[0]]
    copies = [[_uids(_decoded(i)) for i in pool.next_study()] for _ in range(2)]
    classes = {v for uids in template for path, v in uids.items() if path[-1] == "SOPClassUID"}
    values = [{v for uids in study for v in uids.values()} for study in [template, *copies]]
    assert values[0] & values[1] <= classes and values[0] & values[2] <= classes and values[1] & values[2] <= classes
    for copy in copies:
        renamed = defaultdict(set)  # template UID -> the copy's UIDs at its places
        for before, after in zip(template, copy, strict=True):
            assert before.keys() == after.keys()
            for path, uid in before.items():
                renamed[uid].add(after[path])
        assert all(len(new) == 1 for new in renamed.values())  # renamed alike everywhere
        assert len({next(iter(new)) for new in renamed.values()}) == len(renamed)  # distinct stay distinct
    copy = pool.next_study()
    assert [_uids(i.dataset) for i in copy] == [_uids(_decoded(i)) for i in copy]
    if name in ENHANCED:
        assert any(len(path) > 1 for uids in template for path in uids)  # UIDs inside sequences were there


@pytest.mark.parametrize("name", ENHANCED)
def test_a_copy_of_an_enhanced_instance_has_no_dciodvfy_errors(dciodvfy, small_pools, name, tmp_path):
    """Its sequences with renewed UIDs are re-encoded with undefined lengths: still a valid instance."""
    renewed = [i for i in small_pools[name].next_study() if i.renamed]
    assert renewed
    for instance in {i.sop_class_uid: i for i in renewed}.values():
        path = tmp_path / f"{instance.sop_instance_uid}.dcm"
        path.write_bytes(b"".join(instance.part10_chunks()))
        assert [p for p in dciodvfy.problems(path) if p not in load_profile(name).dciodvfy_warnings] == [], path


def test_enhanced_copies_stored_in_the_archive_come_back_byte_identical(small_pools, tmp_path):
    """The re-encoded sequences (undefined lengths, renewed UIDs) pass through a real archive: C-STORE, then C-GET."""
    copies = [next(i for i in small_pools[name].next_study() if i.renamed) for name in ENHANCED]
    classes, syntaxes = sorted({c.sop_class_uid for c in copies}), sorted({c.transfer_syntax_uid for c in copies})
    archive = start_archive(tmp_path / "archive")
    user = ServiceUser(
        Peer("127.0.0.1", archive.port, archive.ae_title),
        "TESTSCU",
        query_proposals() + storage_proposals(classes, syntaxes, scp_role=True),
    )
    try:
        user.connect()
        for c in copies:
            assert user.store(c.sop_class_uid, c.sop_instance_uid, c.transfer_syntax_uid, c.encoded_chunks()) == 0
        arrived = {}
        for c in copies:
            outcome = user.get(study_identifier(c.changes["StudyInstanceUID"]), digests=True)
            arrived |= {a.sop_instance_uid: a.digest for a in outcome.gathered.hashed}
        user.release()
    finally:
        archive.stop()
    assert arrived == {c.sop_instance_uid: c.digest() for c in copies}
