"""Durable file storage: an instance is on disk, complete, before anyone is told so.

Each file is written to a temporary name in its final folder, flushed and fsynced, then
renamed into place (rename is atomic on POSIX file systems) and the folder is fsynced so
the new name survives a crash.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_PREFIX = ".tmp-"


class BadUID(ValueError):
    """A UID that is not a valid DICOM UID (and must never become a path)."""


def check_uid(value: str, what: str) -> str:
    if not value or len(value) > 64 or not UID_PATTERN.match(value):
        raise BadUID(f"{what} is not a valid UID: {value!r}")
    return value


class FileStore:
    """Files under root/<study>/<series>/<sop>.dcm, written atomically."""

    def __init__(self, root: Path, fsync: bool = True):
        self.root = root
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (
            self.root
            / check_uid(study_uid, "StudyInstanceUID")
            / check_uid(series_uid, "SeriesInstanceUID")
            / f"{check_uid(sop_uid, 'SOPInstanceUID')}.dcm"
        )

    def write(self, path: Path, chunks: list[bytes]) -> int:
        """Write the chunks to `path` atomically; return the size in bytes."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        size = 0
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                        size += written
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if self.fsync:
            self._fsync_dir(path.parent)
        return size

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_leftover_temp_files(self) -> int:
        """Delete temp files a crash left behind (they were never acknowledged)."""
        count = 0
        for temp in self.root.rglob(f"{TEMP_PREFIX}*"):
            temp.unlink(missing_ok=True)
            count += 1
        return count
