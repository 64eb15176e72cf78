"""DIMSE status codes in one vocabulary: success, warning, failure, cancelled, pending (PS3.7 Annex C).

The archive's metrics and the harness's counters both decide here, so a warning such as
B000 (coercion of data elements) or B007 (data set does not match SOP class) means the same
thing everywhere: the instance was stored. The table is our own, from the standard, not
pynetdicom's: the analysis and report stages read sample rows through it, and they must not
load a DICOM network library to do so. A code the standard does not class, and a request
that got no response at all (status -1 in sample rows), is a failure.
"""

from __future__ import annotations

SUCCESS, WARNING, FAILURE, CANCELLED, PENDING = "success", "warning", "failure", "cancelled", "pending"
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

# The general status codes of PS3.7 Annex C (C.1 to C.5) that have a class of their own.
GENERAL_CODES = {
    SUCCESS_CODE: SUCCESS,
    0x0001: WARNING,  # requested optional attributes are not supported
    0x0105: FAILURE,  # no such attribute
    0x0106: FAILURE,  # invalid attribute value
    0x0107: WARNING,  # attribute list error
    0x0110: FAILURE,  # processing failure
    0x0111: FAILURE,  # duplicate SOP instance
    0x0112: FAILURE,  # no such SOP instance
    0x0113: FAILURE,  # no such event type
    0x0114: FAILURE,  # no such argument
    0x0115: FAILURE,  # invalid argument value
    0x0116: WARNING,  # attribute value out of range
    0x0117: FAILURE,  # invalid object instance
    0x0118: FAILURE,  # no such SOP class
    0x0119: FAILURE,  # class-instance conflict
    0x0120: FAILURE,  # missing attribute
    0x0121: FAILURE,  # missing attribute value
    0x0122: FAILURE,  # SOP class not supported
    0x0123: FAILURE,  # no such action
    0x0124: FAILURE,  # not authorized
    0x0210: FAILURE,  # duplicate invocation
    UNRECOGNIZED_OPERATION: FAILURE,
    0x0212: FAILURE,  # mistyped argument
    0x0213: FAILURE,  # resource limitation
    CANCEL_CODE: CANCELLED,
    **dict.fromkeys(PENDING_CODES, PENDING),
}
# The service-class-specific ranges (PS3.7 C.1.4): Axxx and Cxxx are failures, Bxxx warnings.
CLASS_BY_HIGH_NIBBLE = {0xA: FAILURE, 0xB: WARNING, 0xC: FAILURE}


def status_class(status: int) -> str:
    """success, warning, failure, cancelled or pending."""
    if status in GENERAL_CODES:
        return GENERAL_CODES[status]
    if 0 <= status <= 0xFFFF:
        return CLASS_BY_HIGH_NIBBLE.get(status >> 12, FAILURE)
    return FAILURE


def is_done(status: int) -> bool:
    """The operation succeeded, with or without a warning (a C-STORE: the instance is stored)."""
    return status_class(status) in (SUCCESS, WARNING)


def is_pending(status: int) -> bool:
    return status_class(status) == PENDING
