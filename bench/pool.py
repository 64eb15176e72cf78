"""The study pool: synthesize a few studies once (cached on disk), send them many times.

Synthesizing pixels costs about a second per 1024x1024 run, far too slow to feed a load
test. The pool generates `size` studies once per (profile, seed), keeps them in a cache
folder outside git, loads them into memory, and hands out copies with fresh Study, Series
and SOP Instance UIDs and accession numbers: every study the archive receives is unique,
and the pixel data is shared, never copied.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from bench import __version__
from bench.generate import generate
from bench.profile import Profile

POOL_FORMAT = 1


def cache_root() -> Path:
    """$PACSBENCH_CACHE, else $XDG_CACHE_HOME/pacsbench, else ~/.cache/pacsbench."""
    if os.environ.get("PACSBENCH_CACHE"):
        return Path(os.environ["PACSBENCH_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pacsbench"


@dataclass(frozen=True)
class PooledInstance:
    dataset: Dataset
    frames: int
    size: int  # bytes of the encoded instance (its DICOM file size)


def _pool_key(profile: Profile, seed: int, size: int) -> str:
    digest = hashlib.sha256(
        json.dumps([POOL_FORMAT, profile.model_dump(), seed, size], sort_keys=True).encode()
    ).hexdigest()[:12]
    return f"{profile.name}-seed{seed}-n{size}-{digest}"


def fresh_copy(instance: Dataset, study_uid: str, series_uid: str, accession: str) -> Dataset:
    """A new dataset sharing the (large) element values, with new identifying UIDs.

    The new values go in as new DataElements (add_new): assigning an attribute would
    mutate the element object the template shares.
    """
    copy = Dataset(dict(instance.items()))
    copy.file_meta = FileMetaDataset(dict(instance.file_meta.items()))
    sop_uid = generate_uid()
    copy.add_new("StudyInstanceUID", "UI", study_uid)
    copy.add_new("SeriesInstanceUID", "UI", series_uid)
    copy.add_new("SOPInstanceUID", "UI", sop_uid)
    copy.add_new("AccessionNumber", "SH", accession)
    copy.file_meta.add_new("MediaStorageSOPInstanceUID", "UI", sop_uid)
    return copy


class StudyPool:
    """Cached synthetic studies and a source of unique copies of them."""

    def __init__(self, folder: Path, studies: list[list[PooledInstance]], profile: Profile, seed: int):
        self.folder = folder
        self.studies = studies
        self.profile = profile
        self.seed = seed
        self._sent = 0

    @classmethod
    def prepare(cls, profile: Profile, size: int, seed: int, progress: bool = True) -> "StudyPool":
        folder = cache_root() / "pool" / _pool_key(profile, seed, size)
        marker = folder / "pool.json"
        if not marker.is_file():
            totals = generate(profile, size, seed, folder, progress=progress)
            marker.write_text(json.dumps({
                "profile": profile.name, "seed": seed, "studies": totals.studies,
                "instances": totals.instances, "frames": totals.frames, "bytes": totals.bytes,
                "pacsbench": __version__,
            }, indent=2))
        return cls(folder, cls._load(folder, size), profile, seed)

    @staticmethod
    def _load(folder: Path, size: int) -> list[list[PooledInstance]]:
        studies = []
        for i in range(size):
            instances = []
            for path in sorted((folder / f"study-{i:04d}").glob("*.dcm")):
                ds = dcmread(path)
                for _ in ds:  # convert raw elements once, so copies share converted elements
                    pass
                instances.append(PooledInstance(ds, int(ds.get("NumberOfFrames", 1) or 1), path.stat().st_size))
            studies.append(instances)
        return studies

    @property
    def sop_classes(self) -> list[str]:
        return sorted({str(i.dataset.SOPClassUID) for s in self.studies for i in s})

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({str(i.dataset.file_meta.TransferSyntaxUID) for s in self.studies for i in s})

    def describe(self) -> dict:
        instances = [i for s in self.studies for i in s]
        return {
            "profile": self.profile.name,
            "profile_settings": self.profile.model_dump(),
            "seed": self.seed,
            "studies": len(self.studies),
            "instances": len(instances),
            "frames": sum(i.frames for i in instances),
            "bytes": sum(i.size for i in instances),
            "transfer_syntaxes": self.transfer_syntaxes,
            "cache_folder": str(self.folder),
        }

    def next_study(self) -> list[PooledInstance]:
        """The next pool study (round robin) as fresh copies with new UIDs."""
        template = self.studies[self._sent % len(self.studies)]
        self._sent += 1
        study_uid = generate_uid()
        accession = f"PB{self._sent:06d}{study_uid[-8:]}"[-16:]
        series_uids = {}
        out = []
        for inst in template:
            old_series = str(inst.dataset.SeriesInstanceUID)
            series_uid = series_uids.setdefault(old_series, generate_uid())
            out.append(PooledInstance(fresh_copy(inst.dataset, study_uid, series_uid, accession), inst.frames, inst.size))
        return out
