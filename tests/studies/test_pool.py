import io
import json

import numpy as np
import pytest
from helpers.tools import require_tool, syntax_params
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset

from bench.studies.encode import SYNTAXES
from bench.studies.generate import patient_visits
from bench.studies.pool import StudyPool
from bench.studies.profile import load_profile


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


def _decode_chunks(instance):
    """The encoded chunks read back by pydicom, as a C-STORE receiver would see them."""
    data = b"".join(instance.encoded_chunks())
    assert len(data) == instance.size
    ds = dcmread(io.BytesIO(data), force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = instance.transfer_syntax_uid
    return ds


@pytest.mark.parametrize("syntax", syntax_params([("explicit",), ("rle",), ("jpeg-ls",), ("j2k",), ("jpeg-sv1",)]))
def test_encoded_chunks_decode_to_the_dataset_with_new_uids_and_same_pixels(syntax):
    if syntax == "jpeg-sv1":
        require_tool("dcmcjpeg", "dcmtk")
    pool = StudyPool.prepare(load_profile("tiny"), size=1, seed=13, progress=False, transfer_syntax=syntax)
    assert pool.transfer_syntaxes == [SYNTAXES[syntax].uid]
    template = pool.studies[0][0]
    instance = pool.next_study()[0]
    decoded = _decode_chunks(instance)
    expected = instance.dataset
    assert [e.tag for e in decoded] == [e.tag for e in expected]
    for element in expected:
        assert decoded[element.tag].value == element.value, element.keyword
    assert decoded.SOPInstanceUID == instance.sop_instance_uid != template.dataset.SOPInstanceUID
    assert decoded.StudyInstanceUID != template.dataset.StudyInstanceUID
    if syntax != "jpeg-sv1":  # pydicom has no SV1 decoder here; its bytes are compared above
        assert np.array_equal(decoded.pixel_array, template.dataset.pixel_array)


def test_chunks_are_views_of_the_shared_pixel_bytes():
    pool = StudyPool.prepare(load_profile("tiny"), size=1, seed=12, progress=False)
    template = pool.studies[0][0].dataset
    first, second = pool.next_study()[0], pool.next_study()[0]
    for instance in (first, second):
        pixels = instance.encoded_chunks()[2]
        assert isinstance(pixels, memoryview) and pixels.obj is template.PixelData
    assert first.encoded_chunks()[0] != second.encoded_chunks()[0]  # headers differ (new UIDs)


def test_a_bigger_pool_reuses_the_cached_studies():
    profile = load_profile("tiny")
    small = StudyPool.prepare(profile, size=1, seed=14, progress=False)
    cached = sorted((small.folder / "study-0000").glob("*.dcm"))
    inodes = [p.stat().st_ino for p in cached]
    big = StudyPool.prepare(profile, size=2, seed=14, progress=False)
    assert big.folder == small.folder and len(big.studies) == 2
    assert [p.stat().st_ino for p in cached] == inodes  # not synthesized again
    assert json.loads((big.folder / "pool.json").read_text())["studies"] == 2


def test_each_pass_makes_new_patients_and_keeps_their_studies_together():
    profile = load_profile("tiny")
    seed = next(s for s in range(100) if patient_visits(profile, s, 2) == [(0, 0), (0, 1)])
    pool = StudyPool.prepare(profile, size=2, seed=seed, progress=False)
    passes = [[pool.next_study(), pool.next_study()] for _ in range(2)]
    patients = [{i.dataset.PatientID for study in studies for i in study} for studies in passes]
    assert all(len(p) == 1 for p in patients)  # one patient with two studies, as in the template
    assert patients[0] != patients[1]
    names = {i.dataset.PatientName for studies in passes for study in studies for i in study}
    assert names == {pool.studies[0][0].dataset.PatientName}


@pytest.mark.parametrize(
    "keyword, value",
    [("SOPInstanceUID", "1.2.3"), ("SOPInstanceUID", "1.2.34"), ("PatientID", "PB01-a"), ("AccessionNumber", "A1")]
    + [("PatientID", "PB0001-abc-0"), ("StudyInstanceUID", "2.25.123456789012345678901234567890123")],
)
def test_the_copies_text_encoder_writes_what_pydicom_writes(keyword, value):
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import DataElement
    from pydicom.tag import Tag

    from bench.studies.pool import encode_element, encode_text_element

    tag = int(Tag(keyword))
    expected = encode_element(DataElement(tag, dictionary_VR(tag), value))
    assert encode_text_element(tag, dictionary_VR(tag), value) == expected


def test_a_copys_new_uids_are_valid_and_distinct():
    from pydicom.uid import UID

    from bench.studies.pool import new_uid

    uids = [new_uid() for _ in range(1000)]
    assert all(UID(u).is_valid and u.startswith("2.25.") for u in uids)
    assert len(set(uids)) == len(uids)
