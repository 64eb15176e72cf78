"""The header scanner must agree with pydicom on every indexed attribute."""

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    XRayAngiographicImageStorage,
)

from server_under_test.services.keys import INDEXED, Incomplete, Malformed, read_keys


def _dataset(charset: str | None = None, name: str = "DOE^JOHN") -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = XRayAngiographicImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyDate = "20250102"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "XA"
    nested = Dataset()
    nested.CodeValue = "X"
    inner = Dataset()
    inner.CodeMeaning = "deep"
    nested.ConceptNameCodeSequence = [inner]
    ds.ProcedureCodeSequence = [nested, nested]  # (0008,1032): a sequence before the wanted tags end
    ds.PatientName = name
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SeriesNumber = 3
    ds.NumberOfFrames = 12
    ds.Rows = 16
    ds.BitsAllocated = 8
    ds.PixelData = b"\x00" * 32
    return ds


def _encode(ds: Dataset, syntax, undefined_length_sequences: bool) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    if undefined_length_sequences:
        for element in ds.iterall():
            if element.VR == "SQ":
                element.is_undefined_length = True
        buffer = BytesIO()
        ds.save_as(buffer, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("undefined", [False, True])
def test_scanner_agrees_with_pydicom(syntax, undefined):
    data = _encode(_dataset(), syntax, undefined)
    keys = read_keys(data, syntax.is_implicit_VR, syntax.is_little_endian)
    reference = dcmread(BytesIO(data), force=True)
    for keyword in INDEXED.values():
        if keyword in reference:
            assert keys[keyword] == str(reference[keyword].value), keyword
    assert keys["NumberOfFrames"] == "12" and keys["SeriesInstanceUID"] == "1.2.3.4"


@pytest.mark.parametrize("charset, name", [("ISO_IR 100", "MÜLLER^JÖRG"), ("ISO_IR 192", "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΕΛΕΝΗ")])
def test_non_ascii_names_are_decoded_by_their_character_set(charset, name):
    data = _encode(_dataset(charset, name), ExplicitVRLittleEndian, False)
    assert read_keys(data, False, True)["PatientName"] == name


def test_truncated_header_asks_for_more_and_garbage_is_malformed():
    data = _encode(_dataset(), ExplicitVRLittleEndian, True)
    with pytest.raises(Incomplete):
        read_keys(data[:150], False, True)
    with pytest.raises(Malformed):
        read_keys(b"\x08\x00\x16\x00\x01\x02\x10\x00" + b"x" * 40, False, True)
