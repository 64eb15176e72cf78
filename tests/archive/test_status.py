"""The archive's DIMSE status table (PS3.7 Annex C) classes every code as pynetdicom's does."""

from __future__ import annotations

from pynetdicom.status import code_to_category

from server_under_test.upper_layer.status import (
    FAILURE,
    NO_RESPONSE,
    is_done,
    is_pending,
    status_class,
)

PYNETDICOM_CLASSES = {
    "Success": "success",
    "Warning": "warning",
    "Failure": "failure",
    "Cancel": "cancelled",
    "Pending": "pending",
    "Unknown": "failure",
}  # an unclassed code fails, as in the archive


def test_every_code_is_classed_as_pynetdicom_classes_it():
    differing = [
        f"0x{code:04X}" for code in range(0x10000) if status_class(code) != PYNETDICOM_CLASSES[code_to_category(code)]
    ]
    assert differing == []


def test_warnings_are_done_and_no_response_is_a_failure():
    assert is_done(0x0000) and is_done(0xB000) and is_done(0x0107)
    assert not is_done(0xA700) and not is_done(0xC000) and not is_done(0x0122)
    assert is_pending(0xFF01) and not is_pending(0xFE00)
    assert status_class(NO_RESPONSE) == FAILURE
