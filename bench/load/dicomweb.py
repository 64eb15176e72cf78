"""DICOMweb on the wire (PS3.18): STOW-RS request bodies, WADO-RS multipart responses, the DICOM JSON answers.

No locust here: bench.load.web_users times the requests and fires the events. A STOW-RS body is
multipart/related; type="application/dicom", one Part 10 file per part (the pool's copies, new UIDs
each), built before the request is timed. A WADO-RS answer is read as it arrives and split into its
parts by python-multipart's streaming parser; each part is read as a Part 10 file
(bench.studies.integrity.received_file), hashed when the user checks digests. A frames answer's parts
are the frames themselves, checked against the pool's pixel data (PoolFrames) when the user checks digests.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from python_multipart.multipart import MultipartParser, parse_options_header

from bench.studies.integrity import ReceivedFile, received_file
from bench.studies.pool import PooledInstance, StudyPool, TemplateInstance

APPLICATION_DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
# Instances as stored: transfer-syntax=* asks the archive not to transcode (PS3.18 8.7.3.5.2).
WADO_ACCEPT = f'multipart/related; type="{APPLICATION_DICOM}"; transfer-syntax=*'
# Frames as stored: native ones as bytes, encapsulated ones as their fragments (PS3.18 8.7.3.5.4, 8.7.4).
FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
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
# What a viewer reads of an instance's metadata before asking for its frames, and what ties an instance to the
# pool template it was copied from (a copy changes UIDs, patient ID and accession number, never these).
SERIES_NUMBER, INSTANCE_NUMBER = 0x00200011, 0x00200013
ROWS, COLUMNS, NUMBER_OF_FRAMES = 0x00280010, 0x00280011, 0x00280008
SAMPLES_PER_PIXEL, BITS_ALLOCATED = 0x00280002, 0x00280100


class Answer:
    """One HTTP answer (a geventhttpclient response): its status and body (read whole, or streamed by the caller
    through `chunks`)."""

    def __init__(self, response):
        self.response = response
        self.status = response.status_code
        self.content_type = str(response.get("content-type") or "")

    def chunks(self) -> Iterator[bytes]:
        while chunk := self.response.read(1 << 16):
            yield chunk

    def body(self) -> bytes:
        return b"".join(self.chunks())


class StowBody:
    """A STOW-RS request body as views of the pool's shared bytes, sent without joining them.

    geventhttpclient sends a `bytes` body as head + body, one more copy of it, after the copy a join
    would make: two copies of every instance, which held the stow users' ceiling to about a third of
    this (`pacsbench calibrate`, 2 MB instances). Any other body with a length it sends through the
    socket's sendfile fallback, which sends whatever `read` returns: so `read` hands out views of up to
    SEND_BLOCK bytes whatever size it is asked for (8 KB each would cost a send per 8 KB). A POST is
    never retried once sent (RFC 9110 9.2.2, geventhttpclient's rule), so the body is read once.
    """

    SEND_BLOCK = 1 << 20

    def __init__(self, chunks: list[bytes | memoryview]):
        self.chunks = [memoryview(chunk).cast("B") for chunk in chunks]
        self.length = sum(len(chunk) for chunk in self.chunks)
        self._chunk, self._at = 0, 0

    def __len__(self) -> int:
        return self.length

    def __bytes__(self) -> bytes:
        return b"".join(self.chunks)

    def read(self, size: int = -1) -> memoryview | bytes:
        while self._chunk < len(self.chunks) and self._at >= len(self.chunks[self._chunk]):
            self._chunk, self._at = self._chunk + 1, 0
        if self._chunk == len(self.chunks):
            return b""
        view = self.chunks[self._chunk][self._at : self._at + max(size, self.SEND_BLOCK)]
        self._at += len(view)
        return view


def stow_body(instances: list[PooledInstance]) -> tuple[StowBody, str]:
    """The STOW-RS request body of these instances and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\nContent-Type: {APPLICATION_DICOM}\r\n\r\n".encode()
    chunks: list[bytes | memoryview] = []
    for instance in instances:
        chunks += [head, *instance.part10_chunks(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return StowBody(chunks), f'multipart/related; type="{APPLICATION_DICOM}"; boundary={boundary}'


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


def read_parts(chunks: Iterable[bytes], content_type: str, on_part: Callable[[bytes], None]) -> None:
    """Each part of a multipart answer read from `chunks` as they arrive, to `on_part` as it ends.

    ValueError when the answer is not multipart."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise ValueError(f"not a multipart answer (Content-Type {content_type or 'none'})")
    reader = PartReader(boundary, on_part)
    for chunk in chunks:
        reader.feed(chunk)
    reader.finish()


def read_instances(chunks: Iterable[bytes], content_type: str, with_digest: bool) -> list[ReceivedFile]:
    """The Part 10 files of a WADO-RS multipart answer read from `chunks` as they arrive.

    ValueError when the answer is not multipart or a part is not a DICOM file."""
    received: list[ReceivedFile] = []

    def on_part(part: bytes) -> None:
        try:
            received.append(received_file(part, with_digest))
        except (InvalidDicomError, AttributeError, KeyError, EOFError, ValueError) as exc:
            raise ValueError(f"part {len(received) + 1} is not a DICOM Part 10 file ({exc})") from None

    read_parts(chunks, content_type, on_part)
    return received


def read_frames(chunks: Iterable[bytes], content_type: str) -> list[bytes]:
    """The frames of a WADO-RS frames answer (multipart, one frame per part), read from `chunks` as they arrive.

    ValueError when the answer is not multipart."""
    frames: list[bytes] = []
    read_parts(chunks, content_type, frames.append)
    return frames


# -- a study's metadata, and the frames it says its instances have ---------------------------
def _json_int(item: dict, tag: int) -> int | None:
    """An integer attribute (US, IS) of a DICOM JSON object; IS may come as a number or a string."""
    value = first_value(item, f"{tag:08X}")
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DescribedInstance:
    """An instance as a study's WADO-RS metadata describes it: where its frames are, and how many."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frames: int
    key: tuple[int | None, ...]  # series number, instance number, rows, columns, frames: see template_key

    def frames_path(self, numbers: list[int]) -> str:
        study, series, sop = self.study_instance_uid, self.series_instance_uid, self.sop_instance_uid
        listed = ",".join(map(str, numbers))
        return f"/studies/{study}/series/{series}/instances/{sop}/frames/{listed}"


def described_instances(found: object) -> list[DescribedInstance]:
    """The instances with pixels (Rows given) in a WADO-RS metadata answer (a list of DICOM JSON objects)."""
    out = []
    for item in found if isinstance(found, list) else []:
        if not isinstance(item, dict) or _json_int(item, ROWS) is None:
            continue
        frames = _json_int(item, NUMBER_OF_FRAMES) or 1
        key = tuple(_json_int(item, tag) for tag in (SERIES_NUMBER, INSTANCE_NUMBER, ROWS, COLUMNS)) + (frames,)
        uids = [str(first_value(item, t) or "") for t in (STUDY_INSTANCE_UID, SERIES_INSTANCE_UID, SOP_INSTANCE_UID)]
        out.append(DescribedInstance(*uids, frames=frames, key=key))
    return out


def frame_batches(frames: int, per_request: int) -> Iterator[list[int]]:
    """Frame numbers 1..frames, `per_request` at a time, as a viewer asks for them."""
    for first in range(1, frames + 1, per_request):
        yield list(range(first, min(first + per_request, frames + 1)))


# -- the pool's frames: what a frames answer must hold -----------------------------------------
def _template_int(template: TemplateInstance, tag: int) -> int | None:
    """An integer attribute of a pool template read from its encoded header (Explicit VR Little Endian, short VRs
    US and IS: tag, VR, 2-byte length, value), without parsing the header: a pool may hold 24,000 templates."""
    at = bisect.bisect_left(template.tags, tag)
    if at == len(template.tags) or template.tags[at] != tag:
        return None
    element = template.header[template.offsets[at] : template.offsets[at + 1]]
    value = element[8:]
    if element[4:6] == b"US":
        return struct.unpack("<H", value[:2])[0]
    try:
        return int(value.decode("ascii").strip(" \0"))
    except ValueError:
        return None


def template_key(template: TemplateInstance) -> tuple[int | None, ...]:
    """What ties a stored copy to its template: DescribedInstance.key, from the template's header."""
    return tuple(_template_int(template, tag) for tag in (SERIES_NUMBER, INSTANCE_NUMBER, ROWS, COLUMNS)) + (
        template.frames,
    )


def template_frames(template: TemplateInstance) -> list[bytes]:
    """The template's frames as an archive cuts them without re-encoding: a native frame is its slice of the Pixel
    Data (rows x columns x samples x bits allocated / 8 bytes), an encapsulated one its fragments, joined
    (pydicom's reading of the Basic Offset Table, or of the fragments when it is empty)."""
    pixels = template.pixel_chunks[1]
    if UID(template.transfer_syntax_uid).is_encapsulated:
        return list(generate_frames(bytes(pixels), number_of_frames=template.frames))
    size = (_template_int(template, ROWS) or 0) * (_template_int(template, COLUMNS) or 0)
    size *= (_template_int(template, SAMPLES_PER_PIXEL) or 1) * (_template_int(template, BITS_ALLOCATED) or 8) // 8
    return [bytes(pixels[n * size : (n + 1) * size]) for n in range(template.frames)]


class PoolFrames:
    """The frames of every pool's templates, to check the frames a WADO-RS answer brings.

    A stored instance is tied to its template by series number, instance number, rows, columns and frames
    (what a copy keeps); frame n must hash equal to frame n of one of the templates with that key (pool
    studies may share the key). Frames are hashed here, before any request, once per distinct Pixel Data:
    the templates of a large series share a few images. An instance no template matches (one the archive
    held before the run, say) is not checked."""

    def __init__(self, pools: Iterable[StudyPool]):
        self.templates: dict[tuple[int | None, ...], list[TemplateInstance]] = {}
        self._digests: dict[int, list[bytes]] = {}  # by id() of the shared Pixel Data bytes, which the pool keeps
        for pool in pools:
            for study in pool.studies:
                for template in study:
                    self.templates.setdefault(template_key(template), []).append(template)
                    self.digests(template)

    def digests(self, template: TemplateInstance) -> list[bytes]:
        shared = id(template.pixel_chunks[1].obj)
        if shared not in self._digests:
            self._digests[shared] = [hashlib.sha256(frame).digest() for frame in template_frames(template)]
        return self._digests[shared]

    def mismatch(self, instance: DescribedInstance, numbers: list[int], frames: list[bytes]) -> str:
        """Why the frames `numbers` of `instance` are not the pool's ("" when they are, or cannot be checked)."""
        candidates = self.templates.get(instance.key)
        if not candidates:
            return ""
        for number, frame in zip(numbers, frames):
            digest = hashlib.sha256(frame).digest()
            if not any(digest == self.digests(t)[number - 1] for t in candidates if number <= len(self.digests(t))):
                return (
                    f"frame {number} of {instance.sop_instance_uid} ({len(frame):,} bytes) is not the pool's pixel data"
                )
        return ""
