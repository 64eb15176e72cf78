"""The paths every stored instance goes through: copy from the pool, encode, index."""

from __future__ import annotations

import io
import itertools

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from server_under_test.services.query import find
from server_under_test.storage.index import Index, InstanceRecord, create_schema

PREFILLED_INSTANCES = 2000


def _record(n: int) -> InstanceRecord:
    study, series = f"1.2.826.0.1.{n // 50}", f"1.2.826.0.2.{n // 10}"
    return InstanceRecord(
        patient_id=f"P{n // 50}",
        patient_name="BENCH^MARK",
        birth_date="19700101",
        sex="O",
        study_uid=study,
        study_date="20260101",
        study_time="120000",
        accession=f"A{n // 50}",
        study_id="1",
        study_description="bench",
        referring="",
        series_uid=series,
        modality="XA",
        series_number=str(n // 10),
        body_part="HEAD",
        series_description="",
        sop_uid=f"1.2.826.0.3.{n}",
        sop_class_uid=XRayAngiographicImageStorage,
        instance_number=str(n),
        transfer_syntax=ExplicitVRLittleEndian,
        frames=10,
        size=1_000_000,
        tier=0,
        path=f"/data/{n}.dcm",
    )


def test_pool_next_study(benchmark, pool):
    """A fresh copy of a pool study with new UIDs: once per study sent."""
    study = benchmark(pool.next_study)
    assert len(study) >= 1 and study[0].dataset.SOPInstanceUID != pool.studies[0][0].dataset.SOPInstanceUID


def test_encode_pool_dataset(benchmark, pool):
    """Encoding one pool instance to bytes, as a C-STORE does."""
    dataset = pool.next_study()[0].dataset

    def encode() -> int:
        buffer = io.BytesIO()
        dcmwrite(buffer, dataset)
        return buffer.tell()

    assert benchmark(encode) >= pool.studies[0][0].size * 0.9


@pytest.fixture
def index(tmp_path):
    # synchronous=OFF: measure the index's own work, not the disk's fsync (benchmarked elsewhere)
    create_schema(tmp_path / "index.sqlite")
    db = Index(tmp_path / "index.sqlite", synchronous="OFF")
    yield db
    db.close()


def test_index_insert(benchmark, index):
    numbers = itertools.count()
    benchmark(lambda: index.add(_record(next(numbers))))
    assert index.count_instances() > 0


def test_index_query(benchmark, index):
    """A study-level C-FIND by Patient ID on a prefilled index (the SQL the archive runs)."""
    for n in range(PREFILLED_INSTANCES):
        index.add(_record(n))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "P7"
    identifier.StudyInstanceUID = ""
    identifier.NumberOfStudyRelatedInstances = None

    def query() -> list:
        return list(find(index.reader, identifier, StudyRootQueryRetrieveInformationModelFind, "PACSBENCH"))

    matches = benchmark(query)  # encoded identifiers (explicit VR little endian), as the archive sends them
    assert len(matches) == 1
    answer = decode(io.BytesIO(matches[0]), False, True)
    assert int(answer.NumberOfStudyRelatedInstances) == 50
