"""`pacsbench matrix`: one scenario against several targets, order rotated per repetition, listed in matrix.json.

main() has already patched the process with gevent before this command imports locust.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.run import add_web_options, web_settings

EPILOG_MATRIX = """examples:
  pacsbench matrix scenarios/smoke.toml --targets native,tcg --repeat 2
  pacsbench matrix scenarios/vm.toml --targets native,tcg,tcg-tap --repeat 3 --results /tmp/results
A target is a [targets.NAME] table of the scenario, or a kind (native, kvm, tcg, orthanc, dcmtk) applied to the
scenario's [target]; kvm-tap and tcg-tap choose tap networking. The last line printed is the matrix folder."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "matrix",
        help="run a scenario against several targets, order rotated per repetition (ABC BCA CAB), "
        "and write matrix.json",
        description="Run one scenario against each target in turn, repeated: one run folder per repetition and "
        "target inside a matrix folder, and matrix.json listing them for `pacsbench compare`. The order rotates per "
        "repetition (ABC, BCA, CAB) and the disks are synced before each run; matrix.json records the order.",
        epilog=EPILOG_MATRIX,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", type=Path, help="scenario file")
    p.add_argument("--targets", required=True, help="comma-separated target names, e.g. native,tcg,tcg-tap")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each target (default 3)")
    p.add_argument("--results", type=Path, default=Path("results"), help="where the matrix folder goes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_web_options(p)
    p.set_defaults(func=cmd_matrix)


def cmd_matrix(args) -> int:
    from bench.runs.matrix import run_matrix

    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    folder = run_matrix(
        args.scenario, names, args.repeat, args.results, progress=not args.no_progress, web=web_settings(args)
    )
    print(folder)
    return 0
