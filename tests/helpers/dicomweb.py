"""DICOMweb as tests speak it to the archive: STOW-RS bodies built by hand, the archive's files and rows counted."""

from __future__ import annotations

import sqlite3
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset

from bench.common.processes import free_local_port
from helpers.archive import RunningArchive, start_archive

BOUNDARY = "pacsbench-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def part10(ds: Dataset) -> bytes:
    """The PS3.10 file of a dataset (what a STOW-RS part carries)."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: list[bytes], content_type: str = "application/dicom", boundary: str = BOUNDARY) -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n" for part in parts)
    return body + f"--{boundary}--\r\n".encode()


def start_web_archive(data: Path, config: str = "") -> tuple[RunningArchive, str]:
    """The archive with DICOMweb on a free port; its DICOMweb base URL."""
    toml = data.with_name(data.name + ".toml")
    toml.write_text(config)
    archive = start_archive(data, "--config", str(toml), "--dicomweb-port", str(free_local_port()))
    assert archive.dicomweb_url and archive.dicomweb_url.endswith("/dicom-web")
    return archive, archive.dicomweb_url


def stored_files(archive: RunningArchive) -> list[Path]:
    """Every file under the archive's storage folder (committed or not: a temp file counts too)."""
    return sorted(p for p in (archive.data / "storage").rglob("*") if p.is_file())


def index_count(archive: RunningArchive) -> int:
    with sqlite3.connect(archive.index) as db:
        return db.execute("SELECT COUNT(*) FROM instance").fetchone()[0]
