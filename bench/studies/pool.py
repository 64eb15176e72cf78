"""The study pool: synthesize a few studies once (cached on disk), send them many times.

Synthesizing pixels costs up to a second per 1024x1024 run, far too slow to feed a load
test. The pool synthesizes each study once per (profile, seed, transfer syntax) into a
cache folder outside git (growing it when a bigger pool is asked for), loads it into
memory, and hands out copies with fresh patient ID, accession number and every UID that
identifies something (study, series, instance, frame of reference, and those inside
sequences: see `identifies`): every study the archive receives is unique.

Nothing is re-encoded per copy. Each cached instance keeps its data set encoded element
by element; a copy re-encodes only the elements that change and hands out the result as
byte chunks (header, Pixel Data element head, a memoryview of the shared pixel bytes,
tail) ready to be streamed as a DIMSE data set. UIDs inside sequences (an enhanced
instance's Dimension Organization UID, say) are renewed in place: their sequences are
encoded with undefined lengths, so a new UID of another length needs no length mended.
"""

from __future__ import annotations

import bisect
import copy as copying
import hashlib
import itertools
import json
import struct
import uuid
from array import array
from functools import cached_property, lru_cache
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import UID, generate_uid

from bench import __version__
from bench.common.paths import cache_root
from bench.studies.encode import syntax_for_uid
from bench.studies.integrity import combine, sha256_of
from bench.studies.profile import AnyProfile
from bench.studies.series import generate

POOL_FORMAT = 2  # bump when the pixel model or the instance layout changes
PIXEL_DATA = Tag("PixelData")
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
# Renewed by keyword in every copy (StudyPool.next_study); `identifies` decides for every other UID.
RENEWED_BY_KEYWORD = frozenset(
    int(Tag(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
)
# UIDs that say what kind of thing something is, never which one: a copy keeps them.
KINDS = frozenset(
    int(Tag(k))
    for k in (
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ContextGroupExtensionCreatorUID",
    )
)


def encode_element(element: DataElement) -> bytes:
    """One data element in Explicit VR Little Endian (every syntax we write uses it)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, element)
    return fp.getvalue()


SHORT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI"}  # 2-byte length, text values


def encode_text_element(tag: int, vr: str, value: str) -> bytes:
    """A text element in Explicit VR Little Endian without pydicom: a copy re-encodes six per instance, and
    pydicom's writer costs ~25 us each. Padded to even length as PS3.5 says (UI with NUL, text with a space)."""
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(raw)) + raw


def _encoded_change(tag: int, value: str) -> bytes:
    vr = dictionary_VR(tag)
    if vr in SHORT_VRS and value.isascii():
        return encode_text_element(tag, vr, value)
    return encode_element(DataElement(tag, vr, value))


def identifies(element: DataElement) -> bool:
    """Whether a UI element names one thing (an instance, series, study, frame of reference, dimension organization,
    irradiation event...): a copy is a new study of a new patient, so it gets a new one. A kind of thing (SOP class,
    transfer syntax, coding scheme: `KINDS`), or a UID the standard registers (UTC as synchronization frame of
    reference, say), stays."""
    if element.VR != "UI" or element.is_empty or element.tag in KINDS:
        return False
    values = list(element.value) if element.VM > 1 else [element.value]
    named = [v for v in values if not UID(v).keyword]
    if named and len(values) > 1:
        raise ValueError(f"multi-valued {element.keyword} is not supported in pooled instances")
    return bool(named)


def _uids_to_renew(element: DataElement) -> list[DataElement]:
    """The UI elements in `element` (itself, or at any depth of a sequence) that a copy renews."""
    if element.VR != "SQ":
        return [element] if identifies(element) else []
    return [found for item in element.value for inner in item for found in _uids_to_renew(inner)]


def _with_undefined_lengths(sequence: DataElement) -> DataElement:
    """A copy of a sequence element whose sequences and items, at any depth, are encoded with undefined length
    (PS3.5 7.5.1): a value inside may then change length with no enclosing length to mend."""
    sequence = copying.deepcopy(sequence)
    todo = [sequence]
    while todo:
        element = todo.pop()
        element.is_undefined_length = True
        for item in element.value:
            item.is_undefined_length_sequence_item = True
            todo += [inner for inner in item if inner.VR == "SQ"]
    return sequence


def _encode_top_level(elements: list[DataElement]) -> tuple[list[bytes], dict[int, list[DataElement]]]:
    """Each top-level element encoded, and by position the UIDs in it that a copy renews where they stand (inside
    sequences; at the top level, beside the keyword-renewed ones). Sequences holding some get undefined lengths."""
    renewed = {i: _uids_to_renew(e) for i, e in enumerate(elements) if e.tag not in RENEWED_BY_KEYWORD}
    renewed = {i: uids for i, uids in renewed.items() if uids}
    in_sequences = {i for i in renewed if elements[i].VR == "SQ"}
    encoded = [encode_element(_with_undefined_lengths(e) if i in in_sequences else e) for i, e in enumerate(elements)]
    return encoded, renewed


def _places(header: bytes, start: int, end: int, uids: list[DataElement]) -> set[tuple[int, int, int, str]]:
    """(start, end, tag, template UID) of each of `uids` in the header's bytes start..end (one top-level element)."""
    places = set()
    for element in uids:  # a UID repeated (one dimension organization in two sequences) is found at each place
        encoded = encode_text_element(int(element.tag), "UI", str(element.value))
        at = header.find(encoded, start, end)
        while at >= 0:
            places.add((at, at + len(encoded), int(element.tag), str(element.value)))
            at = header.find(encoded, at + 1, end)
    if len(places) != len(uids):
        raise ValueError(f"found {len(places)} places of {len(uids)} UIDs to renew in a pooled header")
    return places


def new_uid() -> str:
    """A new UID for a copy: a random UUID as a 2.25 UID (PS3.5 B.2), as pydicom's generate_uid(None) makes it but
    without its UID object: 2.5 us instead of 12 for generate_uid() (a hash of several entropy sources), and a copy
    makes one or more per instance."""
    return f"2.25.{uuid.uuid4().int}"


def _pixel_element_head(element: DataElement) -> bytes:
    """Tag, VR, reserved bytes and length of Pixel Data; undefined length when encapsulated."""
    length = 0xFFFFFFFF if element.is_undefined_length else len(element.value) + len(element.value) % 2
    return struct.pack("<HH2s2xI", 0x7FE0, 0x0010, element.VR.encode(), length)


class TemplateInstance:
    """One cached instance in memory: its data set encoded once (one header and the shared Pixel Data), and the
    few attributes a copy needs. Its pydicom Dataset is read back from the cache file only when asked for
    (`dataset`): a pool of 24,000 instances keeps ~5 KB of header each, not ~50 KB of Dataset objects."""

    def __init__(self, ds: Dataset, path: Path | None = None):
        for _ in ds:  # convert raw elements once, so copies share converted elements
            pass
        elements = [e for e in ds if e.tag != PIXEL_DATA]
        if any(e.tag > PIXEL_DATA for e in elements):
            raise ValueError("elements after Pixel Data are not supported in pooled instances")
        pixel = ds[PIXEL_DATA]
        encoded, renewed = _encode_top_level(elements)
        self.tags = array("L", [int(e.tag) for e in elements])  # top-level tags other than Pixel Data, ascending
        self.offsets = array("Q", itertools.accumulate(map(len, encoded), initial=0))  # where each one starts
        self.header = b"".join(encoded)
        self.renewed_places = sorted(  # (start, end, tag, template UID) in the header
            place for i, uids in renewed.items() for place in _places(self.header, *self.offsets[i : i + 2], uids)
        )
        self.renewed_uids = tuple(dict.fromkeys(uid for *_, uid in self.renewed_places))  # each once
        self.renewed_tags = frozenset(int(elements[i].tag) for i in renewed)  # the top-level elements holding them
        # Encapsulated fragments end with a sequence delimiter; a native odd-length value is padded.
        tail = SEQUENCE_DELIMITER if pixel.is_undefined_length else b"\0" * (len(pixel.value) % 2)
        self.pixel_chunks = (_pixel_element_head(pixel), memoryview(pixel.value), tail)
        self.frames = int(ds.get("NumberOfFrames", 1) or 1)
        self.sop_class_uid = str(ds.SOPClassUID)
        self.sop_instance_uid = str(ds.SOPInstanceUID)
        self.transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
        self.patient_id = str(ds.get("PatientID", ""))
        self.study_instance_uid = str(ds.StudyInstanceUID)
        self.series_instance_uid = str(ds.SeriesInstanceUID)
        self.frame_of_reference_uid = str(ds.get("FrameOfReferenceUID", ""))
        self.modality = str(ds.get("Modality", ""))
        self.path = path
        self._dataset = None if path is not None else ds

    @classmethod
    def from_dataset(cls, ds: Dataset, path: Path | None = None) -> "TemplateInstance":
        """From a dataset; with the `path` it was read from, the Dataset is let go and read back when asked for."""
        return cls(ds, path)

    @property
    def dataset(self) -> Dataset:
        """The template as a pydicom Dataset (read back from its cache file once, its Pixel Data the shared bytes)."""
        if self._dataset is None:
            ds = dcmread(self.path)
            ds["PixelData"].value = self.pixel_chunks[1].obj
            self._dataset = ds
        return self._dataset

    @cached_property
    def pixel_sha256(self) -> bytes:
        """SHA-256 of the Pixel Data element onwards, shared by every copy (see bench.studies.integrity)."""
        return sha256_of(self.pixel_chunks)

    @property
    def pixel_bytes(self) -> int:
        return sum(len(c) for c in self.pixel_chunks)

    @property
    def size(self) -> int:
        """Bytes of the encoded data set (what a C-STORE transfers)."""
        return len(self.header) + self.pixel_bytes

    def encode_header(self, changes: dict[str, str], renamed: dict[str, str] | None = None) -> bytes:
        """Everything before Pixel Data, with the `changes` (keyword -> value) re-encoded (replaced or inserted),
        and each UID of `renewed_places` replaced by its new value in `renamed` (template UID -> copy's)."""
        edits = []  # (start, end, bytes): the header's bytes from start to end become these
        for keyword, value in changes.items():
            tag = _tag_of(keyword)
            at = bisect.bisect_left(self.tags, tag)
            start = self.offsets[at]
            end = self.offsets[at + 1] if at < len(self.tags) and self.tags[at] == tag else start
            edits.append((start, end, _encoded_change(tag, value)))
        if renamed:
            edits += [
                (start, end, encode_text_element(tag, "UI", renamed[uid]))
                for start, end, tag, uid in self.renewed_places
            ]
        edits.sort()
        out, done = [], 0
        for start, end, encoded in edits:
            out += [self.header[done:start], encoded]
            done = end
        out.append(self.header[done:])
        return b"".join(out)


@lru_cache(maxsize=64)
def _tag_of(keyword: str) -> int:
    return int(Tag(keyword))


def fresh_copy(
    instance: Dataset, changes: dict[str, str], renamed: dict[str, str] | None = None, renewed_tags=frozenset()
) -> Dataset:
    """A new dataset sharing the (large) element values, with `changes` (keyword -> value), and the UIDs in the
    top-level elements `renewed_tags` (at any depth) renamed as `renamed` says (template UID -> copy's).

    The new values go in as new DataElements (add_new), and a renamed sequence as a deep copy: assigning an
    attribute would mutate the element object the template shares.
    """
    copy = Dataset(dict(instance.items()))
    copy.file_meta = FileMetaDataset(dict(instance.file_meta.items()))
    for keyword, value in changes.items():
        copy.add_new(keyword, dictionary_VR(keyword), value)
    for tag in renewed_tags if renamed else ():
        element = copying.deepcopy(instance[tag])
        for uid in _uids_to_renew(element):
            uid.value = renamed[str(uid.value)]
        copy[tag] = element
    copy.file_meta.add_new("MediaStorageSOPInstanceUID", "UI", changes["SOPInstanceUID"])
    return copy


class PooledInstance:
    """One instance of a handed-out study: new identity, the template's pixels.

    `encoded_chunks()` is the data set in its transfer syntax (no file meta), as a C-STORE
    sends it; `dataset` is the same as a pydicom Dataset, built on first use.
    """

    def __init__(
        self,
        template: TemplateInstance,
        changes: dict[str, str],
        modalities: str = "",
        renamed: dict[str, str] | None = None,
    ):
        self.template = template
        self.changes = changes
        self.renamed = renamed or {}  # template UID -> this copy's, for the UIDs renewed where they stand
        self.modalities = modalities  # of its study, as Modalities in Study: sorted, backslash-separated
        self.frames = template.frames
        self._header = template.encode_header(changes, self.renamed)
        self.size = len(self._header) + template.pixel_bytes  # bytes of the encoded data set

    @property
    def sop_instance_uid(self) -> str:
        return self.changes["SOPInstanceUID"]

    @property
    def sop_class_uid(self) -> str:
        return self.template.sop_class_uid

    @property
    def transfer_syntax_uid(self) -> str:
        return self.template.transfer_syntax_uid

    @cached_property
    def dataset(self) -> Dataset:
        return fresh_copy(self.template.dataset, self.changes, self.renamed, self.template.renewed_tags)

    def digest(self) -> str:
        """bench.studies.integrity's digest of the encoded data set, without hashing the pixels again."""
        return combine(sha256_of([self._header]), self.template.pixel_sha256)

    def encoded_chunks(self) -> list[bytes | memoryview]:
        """The data set as byte chunks; the pixel chunk is a view of the shared bytes."""
        head, pixels, tail = self.template.pixel_chunks
        return [self._header, head, pixels, tail]

    def part10_chunks(self) -> list[bytes | memoryview]:
        """The copy as a Part 10 file (what STOW-RS sends): preamble, DICM, its File Meta Information, the data set."""
        meta = FileMetaDataset(dict(self.template.dataset.file_meta.items()))
        meta.add_new("MediaStorageSOPInstanceUID", "UI", self.sop_instance_uid)
        fp = DicomBytesIO()
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        return [fp.getvalue(), *self.encoded_chunks()]


def _pool_folder(profile: AnyProfile, seed: int, syntax_name: str) -> Path:
    settings = profile.model_dump(exclude={"description", "transfer_syntax"})
    digest = hashlib.sha256(json.dumps([POOL_FORMAT, settings, seed, syntax_name], sort_keys=True).encode())
    return cache_root() / "pool" / f"{profile.name}-{syntax_name}-seed{seed}-{digest.hexdigest()[:12]}"


def _share_pixels(ds: Dataset, shared: dict[bytes, bytes]) -> Dataset:
    """Point Pixel Data at the copy in `shared` when an earlier instance had the same bytes."""
    value = ds.PixelData
    ds["PixelData"].value = shared.setdefault(hashlib.sha256(value).digest(), value)
    return ds


class StudyPool:
    """Cached synthetic studies and a source of unique copies of them."""

    def __init__(self, folder: Path, studies: list[list[TemplateInstance]], profile: AnyProfile, seed: int):
        self.folder = folder
        self.studies = studies
        self.profile = profile
        self.seed = seed
        self._sent = 0
        self._token = generate_uid()[-6:]  # keeps patients of concurrent pools (processes) apart

    @classmethod
    def prepare(
        cls, profile: AnyProfile, size: int, seed: int, progress: bool = True, transfer_syntax: str | None = None
    ) -> "StudyPool":
        """Synthesize what the cache lacks (studies 0..size-1), then load them.

        `transfer_syntax` is a name (explicit, rle, jpeg-ls, j2k, jpeg-sv1); default: the profile's.
        """
        syntax_name = transfer_syntax or profile.transfer_syntax
        folder = _pool_folder(profile, seed, syntax_name)
        generate(profile, size, seed, folder, progress=progress, syntax_name=syntax_name, keep_existing=True)
        pool = cls(folder, cls._load(folder, size), profile, seed)
        (folder / "pool.json").write_text(json.dumps({**pool.describe(), "pacsbench": __version__}, indent=2))
        return pool

    @staticmethod
    def _load(folder: Path, size: int) -> list[list[TemplateInstance]]:
        """Read the cached studies; instances with the same Pixel Data share one copy of it in memory
        (a series' instances take turns with a few distinct images, see bench.studies.series)."""
        shared: dict[bytes, bytes] = {}
        return [
            [
                TemplateInstance.from_dataset(_share_pixels(dcmread(path), shared), path)
                for path in sorted((folder / f"study-{i:04d}").glob("*.dcm"))
            ]
            for i in range(size)
        ]

    @property
    def sop_classes(self) -> list[str]:
        return sorted({i.sop_class_uid for s in self.studies for i in s})

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({i.transfer_syntax_uid for s in self.studies for i in s})

    def describe(self) -> dict:
        instances = [i for s in self.studies for i in s]
        return {
            "profile": self.profile.name,
            "profile_settings": self.profile.model_dump(),
            "seed": self.seed,
            "studies": len(self.studies),
            "patients": len({i.patient_id for i in instances}),
            "instances": len(instances),
            "frames": sum(i.frames for i in instances),
            "bytes": sum(i.size for i in instances),
            "transfer_syntaxes": self.transfer_syntaxes,
            "transfer_syntax_names": [syntax_for_uid(uid).name for uid in self.transfer_syntaxes],
            "cache_folder": str(self.folder),
        }

    def next_study(self) -> list[PooledInstance]:
        """The next pool study (round robin) as copies with new identities.

        Each pass over the pool makes new patients: a template patient keeps its studies
        together (same new patient ID) within a pass.
        """
        template = self.studies[self._sent % len(self.studies)]
        round_number = self._sent // len(self.studies)
        self._sent += 1
        study_uid = new_uid()
        study = {
            "StudyInstanceUID": study_uid,
            "AccessionNumber": f"PB{self._sent:06d}{study_uid[-8:]}"[-16:],
            "PatientID": f"{template[0].patient_id}-{self._token}-{round_number}" if template else "",
        }
        # template UID -> this copy's, one map for the whole study: a UID the template repeats (a series', a frame of
        # reference, a reference to another instance) is renewed to the same new UID everywhere
        new_uids: dict[str, str] = {template[0].study_instance_uid: study_uid} if template else {}
        modalities = self.modalities(template)
        return [
            PooledInstance(
                inst,
                {**study, **_new_instance_uids(inst, new_uids)},
                modalities,
                {uid: _renamed(uid, new_uids) for uid in inst.renewed_uids},
            )
            for inst in template
        ]

    def modalities(self, study: list[TemplateInstance]) -> str:
        """The study's modalities as an archive answers Modalities in Study: sorted, backslash-separated."""
        return "\\".join(sorted({i.modality for i in study}))


def _new_instance_uids(template: TemplateInstance, new_uids: dict[str, str]) -> dict[str, str]:
    """New Series and SOP Instance UIDs, and a new Frame of Reference UID where the template has one."""
    uids = {
        "SeriesInstanceUID": _renamed(template.series_instance_uid, new_uids),
        "SOPInstanceUID": _renamed(template.sop_instance_uid, new_uids),
    }
    if template.frame_of_reference_uid:
        uids["FrameOfReferenceUID"] = _renamed(template.frame_of_reference_uid, new_uids)
    return uids


def _renamed(uid: str, new_uids: dict[str, str]) -> str:
    """The copy's UID for a template UID, made on first use (one per series, per frame of reference)."""
    if uid not in new_uids:
        new_uids[uid] = new_uid()
    return new_uids[uid]
