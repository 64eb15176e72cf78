"""Backup and restore of the archive from its command line: `python -m server_under_test backup|restore`.

The mechanism (a consistent copy taken while the archive keeps storing, a checked restore)
is storage/backup.py's; this module parses the options and prints one summary line, or one
error line and exit code 2. `pacsbench archive backup|restore` hands its arguments to main().
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server_under_test.storage.backup import BackupError, archive_config, backup, restore
from server_under_test.storage.index import INDEX_FILE

ACTIONS = ("backup", "restore")
DESCRIPTION = "Backup and restore of the archive: a consistent copy taken while the archive keeps storing."

TIERS_HELP = (
    "Tiers: the backup holds every tier's files the index names (give --config when the archive has [[tiers]], "
    "so their paths are known); a restore puts each tier's files on the same-numbered tier of --config, or, "
    "without [[tiers]] there, all of them into DIR/storage (one tier)."
)


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help=f"the archive's data folder (holds {INDEX_FILE})"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FOLDER", help="new or empty folder for the backup")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="the archive's configuration (TOML), for its [[tiers]]"
    )


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", type=Path, help="a folder made by backup")
    parser.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="data folder to restore into (empty, or --force)"
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="configuration (TOML) whose [[tiers]] receive the files"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace what DIR and the configured tier folders hold (everything in them is deleted)",
    )


BACKUP_DESCRIPTION = (
    "Copy the archive consistently while it keeps storing: the index through SQLite's online "
    "backup API, then exactly the files that copy names, a manifest (instances, bytes, SHA-256 "
    "per file, archive version, snapshot time), all fsynced. " + TIERS_HELP
)
RESTORE_DESCRIPTION = (
    "Check a backup against its manifest, then restore it into an empty data folder (or, with "
    "--force, replace what is there). Stop the archive first; afterwards `pacsbench serve "
    "--data DIR` (with the same --config) serves every backed-up instance. " + TIERS_HELP
)


def run_backup(data: Path, out: Path, config_path: Path | None = None) -> tuple[str, int]:
    """The backup command: its one-line summary and exit code (1 when the archive has lost files)."""
    manifest, copied = backup(archive_config(config_path, data), out)
    dropped = f", {len(copied.dropped)} changed after the snapshot left out" if copied.dropped else ""
    missing = (
        (
            f", {len(copied.missing)} left out because the archive has lost their files (see manifest.json "
            "missing_in_archive)"
        )
        if copied.missing
        else ""
    )
    summary = (
        f"backup {out}: {copied.instances} instances, {copied.bytes / 1e6:.1f} MB, snapshot "
        f"{manifest['snapshot_time']}, {copied.seconds:.1f} s ({copied.mb_per_s:.1f} MB/s){dropped}{missing}"
    )
    return summary, 1 if copied.missing else 0


def run_restore(folder: Path, data: Path, config_path: Path | None = None, force: bool = False) -> str:
    """The restore command; its one-line summary."""
    manifest, copied = restore(folder, archive_config(config_path, data), force)
    return (
        f"restored {folder} into {data}: {copied.instances} instances, {copied.bytes / 1e6:.1f} MB, snapshot "
        f"{manifest['snapshot_time']}, {copied.seconds:.1f} s ({copied.mb_per_s:.1f} MB/s, manifest checked)"
    )


def main(argv: list[str] | None = None, prog: str = "python -m server_under_test") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=TIERS_HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_backup_arguments(actions.add_parser("backup", help="back up the archive", description=BACKUP_DESCRIPTION))
    add_restore_arguments(actions.add_parser("restore", help="restore a backup", description=RESTORE_DESCRIPTION))
    args = parser.parse_args(argv)
    try:
        if args.action == "backup":
            summary, code = run_backup(args.data, args.out, args.config)
        else:
            summary, code = run_restore(args.folder, args.data, args.config, args.force), 0
    except (BackupError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    return code
