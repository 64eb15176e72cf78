"""The archive's DICOMweb side against an independent client (dicomweb-client) and across protocols (pynetdicom).

One archive for the module (DICOMweb on a free port); each test stores its own copies, with fresh UIDs and
its own Patient ID, so the tests do not see each other's instances.
"""

from __future__ import annotations

import copy

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from helpers.archive import client
from helpers.dicomfiles import dataset_bytes_of, encoded
from helpers.dicomweb import STOW_TYPE, index_count, multipart, part10, start_web_archive
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelGet

SERIES_PER_STUDY = 2


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    archive, url = start_web_archive(tmp_path_factory.mktemp("dicomweb") / "archive")
    yield archive, url
    archive.stop()


def copies(tiny_studies, patient_id: str, studies: int = 1, study_date: str = "20240105") -> list[Dataset]:
    """The tiny study's instances with fresh UIDs: `studies` studies of two series, one patient."""
    templates = [dcmread(p) for p in sorted((tiny_studies / "study-0000").glob("*.dcm"))]
    out = []
    for _ in range(studies):
        study_uid, series = generate_uid(), [generate_uid() for _ in range(SERIES_PER_STUDY)]
        for i, template in enumerate(templates):
            ds = copy.deepcopy(template)  # Dataset.copy() is shallow: the copies would share their elements
            ds.PatientID, ds.PatientName, ds.StudyDate = patient_id, f"WEB^{patient_id}", study_date
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series[i % SERIES_PER_STUDY]
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            out.append(ds)
    return out


def test_dicomweb_client_round_trip(web, tiny_studies):
    """STOW-RS by dicomweb-client; WADO-RS gives the same dataset bytes back; QIDO-RS counts; metadata; frames."""
    archive, url = web
    sent = copies(tiny_studies, "RT1")
    study = sent[0].StudyInstanceUID
    dicomweb = DICOMwebClient(url)

    answer = dicomweb.store_instances(sent)
    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [d.SOPInstanceUID for d in sent]
    assert "FailedSOPSequence" not in answer

    returned = {ds.SOPInstanceUID: encoded(ds) for ds in dicomweb.retrieve_study(study)}
    assert returned == {ds.SOPInstanceUID: encoded(ds) for ds in sent}

    (found,) = dicomweb.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert found["00201208"]["Value"] == [len(sent)]  # NumberOfStudyRelatedInstances
    assert found["00201206"]["Value"] == [SERIES_PER_STUDY]  # NumberOfStudyRelatedSeries
    assert found["00100020"]["Value"] == ["RT1"]
    assert len(dicomweb.search_for_series(study)) == SERIES_PER_STUDY
    assert len(dicomweb.search_for_instances(study)) == len(sent)

    metadata = dicomweb.retrieve_study_metadata(study)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(d.SOPInstanceUID for d in sent)
    assert all(m["00100010"]["Value"] == [{"Alphabetic": "WEB^RT1"}] for m in metadata)

    first = sent[0]
    frame_bytes = first.Rows * first.Columns * first.BitsAllocated // 8
    last = int(first.NumberOfFrames)
    frames = dicomweb.retrieve_instance_frames(study, first.SeriesInstanceUID, first.SOPInstanceUID, [1, last])
    assert frames == [first.PixelData[:frame_bytes], first.PixelData[(last - 1) * frame_bytes : last * frame_bytes]]


def test_qido_match_keys(web, tiny_studies):
    """Wildcards, date ranges, UID lists, modalities, limit and offset, includefield; a bad key is a 400."""
    archive, url = web
    early, late = copies(tiny_studies, "QK1", 2, "20230301"), copies(tiny_studies, "QK1", 1, "20240615")
    requests.post(
        f"{url}/studies", data=multipart([part10(d) for d in early + late]), headers={"Content-Type": STOW_TYPE}
    )
    dicomweb = DICOMwebClient(url)

    def studies(**filters) -> list[str]:
        found = dicomweb.search_for_studies(search_filters={"PatientID": "QK1", **filters})
        return sorted(s["0020000D"]["Value"][0] for s in found)

    early_uids = sorted({d.StudyInstanceUID for d in early})
    all_uids = sorted({d.StudyInstanceUID for d in early + late})
    assert studies() == all_uids
    assert studies(PatientName="WEB^QK*") == all_uids
    assert studies(PatientName="WEB^QK?") == all_uids
    assert studies(PatientName="WEB^QX*") == []
    assert studies(StudyDate="20230101-20231231") == early_uids
    assert studies(StudyDate="20240101-") == [late[0].StudyInstanceUID]
    assert studies(StudyInstanceUID="\\".join(early_uids)) == early_uids
    assert studies(ModalitiesInStudy="XA") == all_uids
    assert studies(ModalitiesInStudy="CT") == []
    assert studies(AccessionNumber=early[0].AccessionNumber) == all_uids  # the template's, in every copy
    paged = dicomweb.search_for_studies(search_filters={"PatientID": "QK1"}, limit=2, offset=1)
    assert len(paged) == 2
    series = dicomweb.search_for_series(
        search_filters={"PatientID": "QK1", "Modality": "XA"}, fields=["BodyPartExamined"]
    )
    assert len(series) == 3 * SERIES_PER_STUDY and all("00180015" in s for s in series)
    one = early[0]
    (instance,) = dicomweb.search_for_instances(search_filters={"SOPInstanceUID": one.SOPInstanceUID})
    assert instance["00081190"]["Value"][0].endswith(
        f"/studies/{one.StudyInstanceUID}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}"
    )
    assert requests.get(f"{url}/studies", params={"NoSuchKeyword": "1"}).status_code == 400
    assert requests.get(f"{url}/studies", params={"limit": "many"}).status_code == 400
    assert requests.get(f"{url}/studies", params={"SOPInstanceUID": one.SOPInstanceUID}).status_code == 400


def test_stow_bodies_of_declared_length_and_chunked_are_stored_whole(web, tiny_studies):
    """A body with a Content-Length is received from the socket past aiohttp (its connection closes after the
    answer); a chunked one through aiohttp's stream. Both, several megabytes, come back equal by WADO-RS, and
    one client session sends one after the other."""
    archive, url = web
    by_length, by_chunks = copies(tiny_studies, "BD1"), copies(tiny_studies, "BD2")
    session = requests.Session()
    first = session.post(
        f"{url}/studies", data=multipart([part10(d) for d in by_length]), headers={"Content-Type": STOW_TYPE}
    )
    assert first.status_code == 200 and first.headers["Connection"] == "close"
    body = multipart([part10(d) for d in by_chunks])
    pieces = (body[i : i + 100_000] for i in range(0, len(body), 100_000))  # a generator: sent chunked
    second = session.post(f"{url}/studies", data=pieces, headers={"Content-Type": STOW_TYPE})
    assert second.status_code == 200
    dicomweb = DICOMwebClient(url)
    for sent in (by_length, by_chunks):
        returned = {ds.SOPInstanceUID: encoded(ds) for ds in dicomweb.retrieve_study(sent[0].StudyInstanceUID)}
        assert returned == {ds.SOPInstanceUID: encoded(ds) for ds in sent}


def test_stow_answers_per_instance(web, tiny_studies):
    """A wrong study in the URL, a part that is not DICOM: failed with their reasons (409, 202), nothing stored."""
    archive, url = web
    good, other = copies(tiny_studies, "ST1")[:2]
    rows = index_count(archive)

    wrong_study = requests.post(
        f"{url}/studies/{generate_uid()}", data=multipart([part10(good)]), headers={"Content-Type": STOW_TYPE}
    )
    assert wrong_study.status_code == 409
    (failed,) = wrong_study.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA900] and failed["00081155"]["Value"] == [good.SOPInstanceUID]

    mixed = requests.post(
        f"{url}/studies/{other.StudyInstanceUID}",
        data=multipart([part10(other), b"not a DICOM file at all" * 10]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert mixed.status_code == 202
    body = mixed.json()
    assert [i["00081155"]["Value"][0] for i in body["00081199"]["Value"]] == [other.SOPInstanceUID]
    assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0xC210]
    assert index_count(archive) == rows + 1

    json_parts = requests.post(
        f"{url}/studies", data=b"[]", headers={"Content-Type": 'multipart/related; type="application/dicom+json"'}
    )
    assert json_parts.status_code == 415


def test_stow_then_dimse_and_back(web, tiny_studies):
    """STOW-RS then C-FIND and C-GET see the same instances and bytes; C-STORE then WADO-RS gives them back."""
    archive, url = web
    by_web, by_dimse = copies(tiny_studies, "XP1"), copies(tiny_studies, "XP1")
    stow = requests.post(
        f"{url}/studies", data=multipart([part10(d) for d in by_web]), headers={"Content-Type": STOW_TYPE}
    )
    assert stow.status_code == 200
    study = by_web[0].StudyInstanceUID

    store, _ = client(archive)
    try:
        for ds in by_dimse:
            assert store.send_c_store(ds).Status == 0
    finally:
        store.release()
    assoc, received = client(archive, get_role=True)
    try:
        query = Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID, query.NumberOfStudyRelatedInstances = "STUDY", study, ""
        matches = [
            identifier
            for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            if status.Status in (0xFF00, 0xFF01)
        ]
        assert [int(m.NumberOfStudyRelatedInstances) for m in matches] == [len(by_web)]
        query = Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", study
        for _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            pass
    finally:
        assoc.release()
    assert received == {ds.SOPInstanceUID: encoded(ds) for ds in by_web}

    back = DICOMwebClient(url).retrieve_study(by_dimse[0].StudyInstanceUID)
    assert {ds.SOPInstanceUID: encoded(ds) for ds in back} == {ds.SOPInstanceUID: encoded(ds) for ds in by_dimse}
    stored = dataset_bytes_of(part10(by_web[0]))
    raw = requests.get(
        f"{url}/studies/{study}/series/{by_web[0].SeriesInstanceUID}/instances/{by_web[0].SOPInstanceUID}"
    )
    assert raw.status_code == 200 and stored in raw.content  # the received bytes, as received


def test_frames_of_an_encapsulated_instance_are_its_fragments(web, tiny_studies):
    """An RLE instance's frames come back as stored (no decoding), when asked for with transfer-syntax=*."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import RLELossless

    archive, url = web
    (ds,) = copies(tiny_studies, "EN1")[:1]
    ds.compress(RLELossless)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    stow = requests.post(f"{url}/studies", data=multipart([part10(ds)]), headers={"Content-Type": STOW_TYPE})
    assert stow.status_code == 200
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    path = f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames"
    got = DICOMwebClient(url).retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        [2, len(frames)],
        media_types=(("application/octet-stream", "*"),),
    )
    assert got == [frames[1], frames[-1]]
    native_only = requests.get(f"{path}/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert native_only.status_code == 406
