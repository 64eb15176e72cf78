from bench.pool import StudyPool
from bench.profile import load_profile


def test_pool_is_cached_and_hands_out_unique_studies():
    profile = load_profile("tiny")
    pool = StudyPool.prepare(profile, size=2, seed=11, progress=False)
    again = StudyPool.prepare(profile, size=2, seed=11, progress=False)
    assert again.folder == pool.folder and (pool.folder / "pool.json").is_file()
    first, second, third = pool.next_study(), pool.next_study(), pool.next_study()
    studies = [first, second, third]
    assert len({s[0].dataset.StudyInstanceUID for s in studies}) == 3
    sops = [i.dataset.SOPInstanceUID for s in studies for i in s]
    assert len(set(sops)) == len(sops)
    for study in studies:
        assert len({i.dataset.SeriesInstanceUID for i in study}) == len(study)
        assert len({i.dataset.AccessionNumber for i in study}) == 1
        for inst in study:
            assert inst.dataset.file_meta.MediaStorageSOPInstanceUID == inst.dataset.SOPInstanceUID


def test_copies_share_pixels_and_leave_the_template_untouched():
    pool = StudyPool.prepare(load_profile("tiny"), size=1, seed=12, progress=False)
    template = pool.studies[0][0].dataset
    template_uid = template.SOPInstanceUID
    copy = pool.next_study()[0].dataset
    assert copy.SOPInstanceUID != template_uid and template.SOPInstanceUID == template_uid
    assert template.file_meta.MediaStorageSOPInstanceUID == template_uid
    assert copy["PixelData"] is template["PixelData"]  # shared, not copied
