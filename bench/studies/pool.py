"""The study pool: synthesize a few studies once (cached on disk), send them many times.

Synthesizing pixels costs up to a second per 1024x1024 run, far too slow to feed a load
test. The pool synthesizes each study once per (profile, seed, transfer syntax) into a
cache folder outside git (growing it when a bigger pool is asked for), loads it into
memory, and hands out copies with fresh patient ID, accession number and Study, Series
and SOP Instance UIDs: every study the archive receives is unique.

Nothing is re-encoded per copy. Each cached instance keeps its data set encoded element
by element; a copy re-encodes only the five elements that change and hands out the
result as byte chunks (header, Pixel Data element head, a memoryview of the shared
pixel bytes, tail) ready to be streamed as a DIMSE data set.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import struct
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
from pydicom.uid import generate_uid

from bench import __version__
from bench.common.paths import cache_root
from bench.studies.encode import syntax_for_uid
from bench.studies.integrity import combine, sha256_of
from bench.studies.profile import AnyProfile
from bench.studies.series import generate

POOL_FORMAT = 2  # bump when the pixel model or the instance layout changes
PIXEL_DATA = Tag("PixelData")
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0


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
        encoded = [encode_element(e) for e in elements]
        self.tags = array("L", [int(e.tag) for e in elements])  # top-level tags other than Pixel Data, ascending
        self.offsets = array("Q", itertools.accumulate(map(len, encoded), initial=0))  # where each one starts
        self.header = b"".join(encoded)
        # Encapsulated fragments end with a sequence delimiter; a native odd-length value is padded.
        tail = SEQUENCE_DELIMITER if pixel.is_undefined_length else b"\0" * (len(pixel.value) % 2)
        self.pixel_chunks = (_pixel_element_head(pixel), memoryview(pixel.value), tail)
        self.frames = int(ds.get("NumberOfFrames", 1) or 1)
        self.sop_class_uid = str(ds.SOPClassUID)
        self.transfer_syntax_uid = str(ds.file_meta.TransferSyntaxUID)
        self.patient_id = str(ds.get("PatientID", ""))
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

    def encode_header(self, changes: dict[str, str]) -> bytes:
        """Everything before Pixel Data, with the `changes` (keyword -> value) re-encoded (replaced or inserted)."""
        pieces = sorted((_tag_of(keyword), value) for keyword, value in changes.items())
        out, done = [], 0
        for tag, value in pieces:
            at = bisect.bisect_left(self.tags, tag)
            start = self.offsets[at]
            out += [self.header[done:start], _encoded_change(tag, value)]
            done = self.offsets[at + 1] if at < len(self.tags) and self.tags[at] == tag else start
        out.append(self.header[done:])
        return b"".join(out)


@lru_cache(maxsize=64)
def _tag_of(keyword: str) -> int:
    return int(Tag(keyword))


def fresh_copy(instance: Dataset, changes: dict[str, str]) -> Dataset:
    """A new dataset sharing the (large) element values, with `changes` (keyword -> value).

    The new values go in as new DataElements (add_new): assigning an attribute would
    mutate the element object the template shares.
    """
    copy = Dataset(dict(instance.items()))
    copy.file_meta = FileMetaDataset(dict(instance.file_meta.items()))
    for keyword, value in changes.items():
        copy.add_new(keyword, dictionary_VR(keyword), value)
    copy.file_meta.add_new("MediaStorageSOPInstanceUID", "UI", changes["SOPInstanceUID"])
    return copy


class PooledInstance:
    """One instance of a handed-out study: new identity, the template's pixels.

    `encoded_chunks()` is the data set in its transfer syntax (no file meta), as a C-STORE
    sends it; `dataset` is the same as a pydicom Dataset, built on first use.
    """

    def __init__(self, template: TemplateInstance, changes: dict[str, str], modalities: str = ""):
        self.template = template
        self.changes = changes
        self.modalities = modalities  # of its study, as Modalities in Study: sorted, backslash-separated
        self.frames = template.frames
        self._header = template.encode_header(changes)
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
        return fresh_copy(self.template.dataset, self.changes)

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
        study_uid = generate_uid()
        study = {
            "StudyInstanceUID": study_uid,
            "AccessionNumber": f"PB{self._sent:06d}{study_uid[-8:]}"[-16:],
            "PatientID": f"{template[0].patient_id}-{self._token}-{round_number}" if template else "",
        }
        new_uids: dict[str, str] = {}  # template UID -> this copy's (series; frame of reference)
        modalities = self.modalities(template)
        return [PooledInstance(inst, {**study, **_new_instance_uids(inst, new_uids)}, modalities) for inst in template]

    def modalities(self, study: list[TemplateInstance]) -> str:
        """The study's modalities as an archive answers Modalities in Study: sorted, backslash-separated."""
        return "\\".join(sorted({i.modality for i in study}))


def _new_instance_uids(template: TemplateInstance, new_uids: dict[str, str]) -> dict[str, str]:
    """New Series and SOP Instance UIDs, and a new Frame of Reference UID where the template has one."""
    uids = {"SeriesInstanceUID": _renamed(template.series_instance_uid, new_uids), "SOPInstanceUID": generate_uid()}
    if template.frame_of_reference_uid:
        uids["FrameOfReferenceUID"] = _renamed(template.frame_of_reference_uid, new_uids)
    return uids


def _renamed(uid: str, new_uids: dict[str, str]) -> str:
    """The copy's UID for a template UID, made on first use (one per series, per frame of reference)."""
    if uid not in new_uids:
        new_uids[uid] = generate_uid()
    return new_uids[uid]
