"""DIMSE status codes in one vocabulary: success, warning, failure, cancelled, pending (PS3.7 Annex C).

The archive's metrics and the harness's counters both decide here, so a warning such as
B000 (coercion of data elements) or B007 (data set does not match SOP class) means the same
thing everywhere: the instance was stored. pynetdicom's table classifies the codes; a code
it does not know, and a request that got no response at all (status -1 in sample rows), is a
failure.
"""

from __future__ import annotations

from pynetdicom.status import code_to_category

SUCCESS, WARNING, FAILURE, CANCELLED, PENDING = "success", "warning", "failure", "cancelled", "pending"
_CATEGORIES = {"Success": SUCCESS, "Warning": WARNING, "Failure": FAILURE, "Cancel": CANCELLED, "Pending": PENDING}
NO_RESPONSE = -1  # what a sample row records when no DIMSE response arrived

SUCCESS_CODE = 0x0000
PENDING_CODES = (0xFF00, 0xFF01)
PENDING_CODE = PENDING_CODES[0]  # what the archive sends: matches and sub-operations go on
CANCEL_CODE = 0xFE00

# Codes answered from more than one place (the archive's services, the harness's Storage SCP); PS3.4 Annex C.
UNRECOGNIZED_OPERATION = 0x0211
SUBOPERATIONS_FAILED_OR_WARNING = 0xB000  # C-MOVE, C-GET: some sub-operations failed or warned
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702  # also: out of resources for one sub-operation
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def status_class(status: int) -> str:
    """success, warning, failure, cancelled or pending."""
    if status < 0:
        return FAILURE
    return _CATEGORIES.get(code_to_category(status), FAILURE)


def is_done(status: int) -> bool:
    """The operation succeeded, with or without a warning (a C-STORE: the instance is stored)."""
    return status_class(status) in (SUCCESS, WARNING)


def is_pending(status: int) -> bool:
    return status_class(status) == PENDING
