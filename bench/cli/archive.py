"""`pacsbench archive backup|restore`: a consistent backup of the reference archive while it stores, and its restore."""

from __future__ import annotations


def add_parser(sub) -> None:
    # No options here: main() hands everything after `archive` to the archive's own parser
    # (server_under_test.storage.backup), which also runs alone inside a guest.
    p = sub.add_parser(
        "archive",
        help="back up the reference archive while it keeps storing, or restore a backup",
        description="`pacsbench archive backup --data DIR --out FOLDER` and `pacsbench archive restore FOLDER "
        "--data DIR`; see `pacsbench archive --help`.",
        add_help=False,
    )
    p.set_defaults(func=cmd_archive)


def cmd_archive(args) -> int:
    from server_under_test.storage.backup import main as backup_main

    return backup_main(args.args, prog="pacsbench archive")
