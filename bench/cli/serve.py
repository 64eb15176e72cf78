"""`pacsbench serve`: the reference archive in the foreground, with its own options."""

from __future__ import annotations


def add_parser(sub) -> None:
    # No options here: main() hands everything after `serve` to the archive's own parser.
    p = sub.add_parser(
        "serve",
        help="run the reference archive (DICOM C-ECHO/C-STORE SCP with a SQLite index) in the foreground",
        description="Run the reference archive until SIGTERM or Ctrl-C. Options are those of "
        "`python -m server_under_test`; see `pacsbench serve --help`.",
        add_help=False,
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from server_under_test.server import main as serve_main

    return serve_main(args.args, prog="pacsbench serve")
