"""DICOMweb on the wire (PS3.18): STOW-RS request bodies, WADO-RS multipart responses, the DICOM JSON answers.

No locust here: bench.load.web_users times the requests and fires the events. A STOW-RS body is
multipart/related; type="application/dicom", one Part 10 file per part (the pool's copies, new UIDs
each), built before the request is timed. A WADO-RS answer is read as it arrives and split into its
parts by python-multipart's streaming parser; each part is read as a Part 10 file
(bench.studies.integrity.received_file), hashed when the user checks digests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from pydicom.errors import InvalidDicomError
from python_multipart.multipart import MultipartParser, parse_options_header

from bench.studies.integrity import ReceivedFile, received_file
from bench.studies.pool import PooledInstance

APPLICATION_DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
# Instances as stored: transfer-syntax=* asks the archive not to transcode (PS3.18 8.7.3.5.2).
WADO_ACCEPT = f'multipart/related; type="{APPLICATION_DICOM}"; transfer-syntax=*'
READ_CHUNK = 1 << 16

# DICOM JSON keys (PS3.18 F.2): tags as eight hex digits.
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
STUDY_RELATED_INSTANCES = "00201208"  # NumberOfStudyRelatedInstances
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


def stow_body(instances: list[PooledInstance]) -> tuple[bytes, str]:
    """The STOW-RS request body of these instances and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: {APPLICATION_DICOM}\r\n\r\n".encode()
    chunks: list[bytes | memoryview] = []
    for instance in instances:
        chunks += [head, *instance.part10_chunks(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{APPLICATION_DICOM}"; boundary={boundary}'


def first_value(item: dict, tag: str) -> object | None:
    """The first value of `tag` in a DICOM JSON object (None when absent or empty)."""
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def stow_outcome(answer: object) -> tuple[set[str], list[str]]:
    """From a STOW-RS response (DICOM JSON): the SOP Instance UIDs stored, and the failures as
    "FailureReason 0xA900 (2 instances, e.g. 1.2.3)" per reason (PS3.18 10.5.3, FailedSOPSequence)."""
    if isinstance(answer, list):  # some servers wrap the one response object in an array
        answer = answer[0] if answer else {}
    if not isinstance(answer, dict):
        return set(), []
    stored = {
        str(first_value(item, REFERENCED_SOP_INSTANCE_UID))
        for item in (answer.get(REFERENCED_SOP_SEQUENCE) or {}).get("Value") or []
    }
    by_reason: dict[str, list[str]] = {}
    for item in (answer.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []:
        reason = first_value(item, FAILURE_REASON)
        text = f"0x{int(reason):04X}" if isinstance(reason, int) else "not given"
        by_reason.setdefault(text, []).append(str(first_value(item, REFERENCED_SOP_INSTANCE_UID)))
    failures = [
        f"FailureReason {reason} ({len(uids)} instance{'s' * (len(uids) > 1)}, e.g. {uids[0]})"
        for reason, uids in sorted(by_reason.items())
    ]
    return stored, failures


def study_uids(found: list) -> list[str]:
    """The Study Instance UIDs of a QIDO-RS answer (DICOM JSON objects)."""
    return [str(uid) for item in found if isinstance(item, dict) and (uid := first_value(item, STUDY_INSTANCE_UID))]


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart Content-Type (None when it is not multipart)."""
    kind, options = parse_options_header(content_type)
    return options.get(b"boundary") if kind.startswith(b"multipart/") else None


class PartReader:
    """Splits a multipart body fed in chunks into its parts; each whole part goes to `on_part` as bytes."""

    def __init__(self, boundary: bytes, on_part: Callable[[bytes], None]):
        self.on_part = on_part
        self.pieces: list[bytes] = []
        self.parts = 0
        self.parser = MultipartParser(
            boundary,
            {"on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end},
        )

    def _begin(self) -> None:
        self.pieces = []

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.pieces.append(data[start:end])

    def _end(self) -> None:
        self.parts += 1
        self.on_part(b"".join(self.pieces))
        self.pieces = []

    def feed(self, chunk: bytes) -> None:
        self.parser.write(chunk)

    def finish(self) -> None:
        self.parser.finalize()


def read_instances(chunks: Iterable[bytes], content_type: str, with_digest: bool) -> list[ReceivedFile]:
    """The Part 10 files of a WADO-RS multipart answer read from `chunks` as they arrive.

    ValueError when the answer is not multipart or a part is not a DICOM file."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise ValueError(f"not a multipart answer (Content-Type {content_type or 'none'})")
    received: list[ReceivedFile] = []

    def on_part(part: bytes) -> None:
        try:
            received.append(received_file(part, with_digest))
        except (InvalidDicomError, AttributeError, KeyError, EOFError, ValueError) as exc:
            raise ValueError(f"part {len(received) + 1} is not a DICOM Part 10 file ({exc})") from None

    reader = PartReader(boundary, on_part)
    for chunk in chunks:
        reader.feed(chunk)
    reader.finish()
    return received
