"""Backup and restore of the archive: a consistent copy taken while the archive keeps storing.

Backup: SQLite's online backup API copies the index in one read transaction (in WAL mode
the archive's writers go on meanwhile); then exactly the files that copy names are copied,
so every row of the backup has its file. Instances stored after the snapshot are not in
the backup, as in any point-in-time copy. A manifest (written last, so its presence means
the backup is complete) records the snapshot's time, the archive's version, the instance
count, the bytes and each file's size and SHA-256; everything written is fsynced.

Restore: the manifest is checked in full (every file's SHA-256, the index's) before
anything is written; then the files go to the tiers of the given configuration, the index
last, its paths rewritten to where the files now are. Stop the archive before a restore.

The command line is backup_command.py's: `python -m server_under_test backup|restore`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from server_under_test import __version__
from server_under_test.config import ArchiveConfig, ConfigError, Tier, load_config, with_overrides
from server_under_test.storage.files import fsync_path
from server_under_test.storage.index import INDEX_FILE, connect, remove_instance

MANIFEST = "manifest.json"
FORMAT = "pacsbench-archive-backup"
FORMAT_VERSION = 1
BLOCK = 4 << 20


class BackupError(Exception):
    """A backup or restore that cannot go on: the message is one line for the user."""


@dataclass
class Copied:
    """What a backup or restore copied, and how long it took."""

    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)  # SOP Instance UIDs changed after the snapshot
    missing: list[str] = field(default_factory=list)  # ... whose file the archive itself has lost

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


# -- copying ----------------------------------------------------------------------------
def _copy_hashing(source: Path, target: Path) -> tuple[int, str]:
    """Copy one file, fsync it, and return its size and SHA-256 (read once)."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(BLOCK):
            digest.update(block)
            dst.write(block)
            size += len(block)
        dst.flush()
        os.fsync(dst.fileno())
    return size, digest.hexdigest()


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _make_dirs(folder: Path, made: set[Path]) -> None:
    if folder not in made:
        folder.mkdir(parents=True, exist_ok=True)
        made.add(folder)


def _fsync_tree(folders: set[Path], top: Path) -> None:
    """fsync new folders and their parents up to `top`, so every new name survives a crash."""
    todo = set(folders)
    for folder in folders:
        while folder != top and top in folder.parents:
            folder = folder.parent
            todo.add(folder)
    for folder in sorted(todo, key=lambda p: len(p.parts), reverse=True):
        fsync_path(folder)


def _write_durably(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    fsync_path(path.parent)


def _relative(path: str) -> Path:
    """<study>/<series>/<sop>.dcm: where a file sits under its tier's root (FileStore.path_for)."""
    return Path(*Path(path).parts[-3:])


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# -- backup -----------------------------------------------------------------------------
def _check_backup_paths(config: ArchiveConfig, out: Path) -> Path:
    data = config.data
    if not data.is_dir():
        raise BackupError(f"{data}: no such folder")
    index = data / INDEX_FILE
    if not index.is_file():
        raise BackupError(f"{data}: not an archive data folder (no {INDEX_FILE})")
    if not _is_empty(out):
        raise BackupError(f"{out}: not empty (a backup goes into a new or empty folder)")
    for root in [data, *(t.path for t in config.storage_tiers)]:
        if _inside(out, root):
            raise BackupError(f"{out}: inside the archive's folder {root} (put the backup elsewhere)")
    return index


def _snapshot(index: Path, target: Path) -> float:
    """Copy the index in one read transaction; return the snapshot's time (epoch seconds)."""
    live = connect(index)
    copy = sqlite3.connect(target, isolation_level=None)
    try:
        taken = time.time()
        live.backup(copy)  # pages=-1: every page in one step, so one consistent read
        copy.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
    finally:
        live.close()
        copy.close()
    return taken


def _source(row_path: str, tier: int, roots: list[Path]) -> Path:
    """Where a row's file is now: under its tier's configured root, else where the row says."""
    if tier < len(roots):
        candidate = roots[tier] / _relative(row_path)
        if candidate.exists() or not Path(row_path).is_absolute():
            return candidate
    return Path(row_path)


def _moved_to(live: sqlite3.Connection, sop_uid: str, stored_at: float, size: int) -> tuple[int, str] | None:
    """(tier, path) of the same stored instance now: migration may have moved it since the snapshot.

    The same version has the same stored_at and size; an instance stored again has a new stored_at.
    """
    return live.execute(
        "SELECT tier, path FROM instance WHERE sop_uid=? AND stored_at=? AND size=?", (sop_uid, stored_at, size)
    ).fetchone()


def _try_copy(source: Path, target: Path, size: int) -> str | None:
    """Copy a file whose size must be `size`; its SHA-256, or None when it is gone or not that file."""
    try:
        copied, sha256 = _copy_hashing(source, target)
    except FileNotFoundError:
        return None
    return sha256 if copied == size else None


def _copy_instance(row: tuple, roots: list[Path], out: Path, live: sqlite3.Connection, made: set[Path]) -> dict | str:
    """Copy one snapshot row's file into the backup: its manifest entry, or why it was left out.

    Renames are atomic, so a file read is always one complete version; its size tells whether it
    is the snapshot's. Gone or another size: migrated (read it where it is now), else "changed"
    (recycled or stored again after the snapshot), or "missing" when the archive's index still
    names that very file (the archive lost it: the backup cannot hold it).
    """
    sop_uid, stored_at, tier, path, size = row
    name = Path(f"tier-{tier}") / _relative(path)
    target = out / name
    _make_dirs(target.parent, made)
    sha256 = _try_copy(_source(path, tier, roots), target, size)
    now = None
    if sha256 is None and (now := _moved_to(live, sop_uid, stored_at, size)) and now[1] != path:
        sha256 = _try_copy(_source(now[1], now[0], roots), target, size)
    if sha256 is None:
        target.unlink(missing_ok=True)
        return "missing" if now and now[1] == path else "changed"
    return {"path": name.as_posix(), "size": size, "sha256": sha256}


def _drop(copy_path: Path, sop_uids: list[str]) -> None:
    """Take instances whose snapshot version no longer exists out of the backup's index."""
    db = sqlite3.connect(copy_path, isolation_level=None)
    try:
        db.execute("BEGIN")
        for sop_uid in sop_uids:
            remove_instance(db, sop_uid)
        db.execute("COMMIT")
    finally:
        db.close()


def backup(config: ArchiveConfig, out: Path) -> tuple[dict, Copied]:
    """Back up the archive of `config` (its data folder and tiers) into `out`; the manifest and the figures."""
    index = _check_backup_paths(config, out)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    taken = _snapshot(index, out / INDEX_FILE)
    roots = [t.path for t in config.storage_tiers]
    copy = sqlite3.connect(out / INDEX_FILE)
    rows = copy.execute("SELECT sop_uid, stored_at, tier, path, size FROM instance ORDER BY tier, path").fetchall()
    copy.close()
    live = connect(index)
    made: set[Path] = set()
    files, result = [], Copied()
    try:
        for row in rows:
            entry = _copy_instance(row, roots, out, live, made)
            if entry == "changed":
                result.dropped.append(row[0])
            elif entry == "missing":
                result.missing.append(row[0])
            else:
                files.append(entry)
    finally:
        live.close()
    if result.dropped or result.missing:
        _drop(out / INDEX_FILE, result.dropped + result.missing)
    _fsync_tree(made, out)
    index_size, index_sha256 = _hash(out / INDEX_FILE)
    fsync_path(out / INDEX_FILE)
    result.instances, result.bytes = len(files), sum(f["size"] for f in files)
    manifest = _manifest(config.storage_tiers, files, taken, index_size, index_sha256, result)
    _write_durably(out / MANIFEST, json.dumps(manifest, indent=1))
    result.seconds = time.perf_counter() - started
    return manifest, result


def _manifest(
    tiers: tuple[Tier, ...], files: list[dict], taken: float, index_size: int, index_sha256: str, result: Copied
) -> dict:
    by_tier: dict[int, list[dict]] = {}
    for entry in files:
        by_tier.setdefault(int(entry["path"].split("/", 1)[0].removeprefix("tier-")), []).append(entry)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "archive_version": __version__,
        "snapshot_time": datetime.fromtimestamp(taken, timezone.utc).isoformat(timespec="milliseconds"),
        "instances": result.instances,
        "bytes": result.bytes,
        "dropped_after_snapshot": len(result.dropped),
        "missing_in_archive": result.missing,
        "index": {"path": INDEX_FILE, "size": index_size, "sha256": index_sha256},
        "tiers": [
            {
                "number": n,
                "name": tiers[n].name if n < len(tiers) else f"tier{n + 1}",
                "path": str(tiers[n].path) if n < len(tiers) else "",
                "instances": len(entries),
                "bytes": sum(e["size"] for e in entries),
            }
            for n, entries in sorted(by_tier.items())
        ],
        "files": files,
    }


# -- restore ----------------------------------------------------------------------------
def read_manifest(folder: Path) -> dict:
    if not folder.is_dir():
        raise BackupError(f"{folder}: no such folder")
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{folder}: not an archive backup (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"{folder / MANIFEST}: not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{folder}: not an archive backup ({MANIFEST} is not a {FORMAT} manifest)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{folder}: backup format {manifest.get('format_version')} (this archive reads {FORMAT_VERSION})"
        )
    return manifest


def verify(folder: Path) -> dict:
    """Check a backup against its manifest (sizes, SHA-256, the index's rows); the manifest, or BackupError."""
    manifest = read_manifest(folder)
    mismatch = f"{folder}: manifest check failed"
    entries = [manifest["index"], *manifest["files"]]
    for entry in entries:
        path = folder / entry["path"]
        if not path.is_file():
            raise BackupError(f"{mismatch}: {entry['path']} is missing")
        size, sha256 = _hash(path)
        if size != entry["size"]:
            raise BackupError(f"{mismatch}: {entry['path']} has {size} bytes, the manifest says {entry['size']}")
        if sha256 != entry["sha256"]:
            raise BackupError(f"{mismatch}: {entry['path']} differs from its SHA-256 in the manifest")
    named = {f"tier-{tier}/{_relative(path).as_posix()}" for tier, path in _rows(folder / INDEX_FILE)}
    listed = {entry["path"] for entry in manifest["files"]}
    if named != listed or len(listed) != manifest["instances"]:
        raise BackupError(f"{mismatch}: the index names {len(named)} files, the manifest lists {len(listed)}")
    return manifest


def _rows(index: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(f"{index.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return db.execute("SELECT tier, path FROM instance").fetchall()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{index}: not a readable index: {exc}") from None
    finally:
        db.close()


def _destinations(config: ArchiveConfig, manifest: dict) -> dict[int, tuple[int, Tier]]:
    """Backup tier number -> (tier number, tier) it is restored to."""
    tiers = config.storage_tiers
    out = {}
    for entry in manifest["tiers"]:
        number = entry["number"] if config.tiers else 0
        if number >= len(tiers):
            raise BackupError(
                f"the backup holds tier {entry['number']} ({entry['name']}); the configuration has {len(tiers)} tiers"
            )
        out[entry["number"]] = (number, tiers[number])
    return out


def _check_restore_paths(folder: Path, config: ArchiveConfig, force: bool) -> list[Path]:
    targets = [config.data, *(t.path for t in config.storage_tiers)]
    for target in targets:
        if _inside(folder, target) or _inside(target, folder):
            raise BackupError(f"{folder}: the backup and the restored archive's {target} overlap")
        if not force and not _is_empty(target):
            raise BackupError(f"{target}: not empty (restore into an empty folder, or replace it with --force)")
    return targets


def _clear(folders: list[Path]) -> None:
    for folder in folders:
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _copy_files(folder: Path, manifest: dict, destinations: dict[int, tuple[int, Tier]]) -> None:
    made: dict[Path, set[Path]] = {}
    for entry in manifest["files"]:
        tier_name, relative = entry["path"].split("/", 1)
        _, tier = destinations[int(tier_name.removeprefix("tier-"))]
        target = tier.path / relative
        _make_dirs(target.parent, made.setdefault(tier.path, set()))
        shutil.copyfile(folder / entry["path"], target)  # (verified before: no hashing here)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
    for root, folders in made.items():
        _fsync_tree(folders, root)


def _install_index(folder: Path, data: Path, destinations: dict[int, tuple[int, Tier]]) -> None:
    """Copy the index in, rows pointing at the restored files, usage per tier recounted; atomically."""
    temp = data / f".{INDEX_FILE}.restoring"
    shutil.copyfile(folder / INDEX_FILE, temp)
    db = sqlite3.connect(temp, isolation_level=None)
    try:
        rows = db.execute("SELECT sop_uid, tier, path FROM instance").fetchall()
        db.execute("BEGIN")
        db.executemany(
            "UPDATE instance SET tier=?, path=? WHERE sop_uid=?",
            [
                (destinations[tier][0], str(destinations[tier][1].path / _relative(path)), sop_uid)
                for sop_uid, tier, path in rows
            ],
        )
        db.execute("DELETE FROM tier_usage")
        db.execute(
            "INSERT INTO tier_usage(tier, bytes, files) SELECT tier, SUM(size), COUNT(*) FROM instance GROUP BY tier"
        )
        db.execute("COMMIT")
    finally:
        db.close()
    fsync_path(temp)
    os.replace(temp, data / INDEX_FILE)
    fsync_path(data)


def restore(folder: Path, config: ArchiveConfig, force: bool = False) -> tuple[dict, Copied]:
    """Restore a backup into the data folder and tiers of `config`; the manifest and the figures."""
    started = time.perf_counter()
    manifest = read_manifest(folder)
    destinations = _destinations(config, manifest)
    targets = _check_restore_paths(folder, config, force)
    verify(folder)
    if force:
        _clear(targets)
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
    _copy_files(folder, manifest, destinations)
    _install_index(folder, config.data, destinations)  # last: until it is in place, DIR holds no archive
    result = Copied(manifest["instances"], manifest["bytes"], time.perf_counter() - started)
    return manifest, result


def archive_config(config_path: Path | None, data: Path) -> ArchiveConfig:
    try:
        return with_overrides(load_config(config_path), data=data)
    except ConfigError as exc:
        raise BackupError(str(exc)) from None
