"""The `pacsbench` parser and dispatcher: each verb lives in its own module of bench/cli.

Verb modules import their heavy modules inside their command. `run`, `worker` and `matrix`
drive locust, so main() patches the process with gevent before any of them imports
anything that opens a socket or starts a thread.
"""

from __future__ import annotations

import argparse
import sys

from bench import __version__
from bench.cli import (
    baseline,
    calibrate,
    compare,
    gate,
    generate,
    matrix,
    report,
    run,
    send,
    serve,
    verify,
    vm,
    worker,
)
from bench.common.errors import UserError
from bench.common.open_files import raise_open_files_limit

# In the order `pacsbench --help` lists them.
VERBS = (generate, serve, run, send, calibrate, verify, worker, report, compare, gate, baseline, matrix, vm)

LOCUST_COMMANDS = {"run", "worker", "matrix"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacsbench",
        description="A DICOM archive benchmark: synthetic DSA studies, locust-driven DICOM clients, "
        "a reference archive, and reports.",
    )
    parser.add_argument("--version", action="version", version=f"pacsbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    raise_open_files_limit()
    if argv[:1] and argv[0] in LOCUST_COMMANDS:
        # locust runs on gevent: patch before anything (targets, urllib, ssl) is imported,
        # or ssl breaks (RecursionError) and sockets stay blocking.
        from gevent import monkey

        monkey.patch_all()
    parser = build_parser()
    if argv[:1] == ["serve"]:
        # Everything after `serve` belongs to the archive's own parser (argparse's REMAINDER
        # would refuse a leading option such as --help).
        args = argparse.Namespace(func=serve.cmd_serve, args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"pacsbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pacsbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
