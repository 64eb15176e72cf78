"""`pacsbench archive backup|restore`: a consistent backup of the reference archive while it stores, and its restore."""

from __future__ import annotations

from bench.cli.delegated import add_delegated_verb


def add_parser(sub) -> None:
    # The actions and their options live in server_under_test.backup_command, which also runs alone in a guest.
    add_delegated_verb(
        sub,
        "archive",
        cmd_archive,
        "back up the reference archive while it keeps storing, or restore a backup",
        "`pacsbench archive backup --data DIR --out FOLDER` and `pacsbench archive restore FOLDER "
        "--data DIR`; see `pacsbench archive --help`.",
    )


def cmd_archive(args) -> int:
    from server_under_test.backup_command import main as backup_main

    return backup_main(args.args, prog="pacsbench archive")
