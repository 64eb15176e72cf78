"""`pacsbench serve`: the reference archive in the foreground, with its own options."""

from __future__ import annotations

from bench.cli.delegated import add_delegated_verb


def add_parser(sub) -> None:
    add_delegated_verb(
        sub,
        "serve",
        cmd_serve,
        "run the reference archive (DICOM C-ECHO/C-STORE SCP with a SQLite index) in the foreground",
        "Run the reference archive until SIGTERM or Ctrl-C. Options are those of "
        "`python -m server_under_test`; see `pacsbench serve --help`.",
    )


def cmd_serve(args) -> int:
    from server_under_test.server import main as serve_main

    return serve_main(args.args, prog="pacsbench serve")
