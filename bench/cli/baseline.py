"""`pacsbench baseline save`: keep a run's figures as a small baseline file for `pacsbench gate`."""

from __future__ import annotations

from pathlib import Path

from bench.cli.settings import add_settings, settings


def add_parser(sub) -> None:
    p = sub.add_parser(
        "baseline",
        help="keep a run's figures as a small baseline file for `pacsbench gate`",
        description="Manage gate baselines.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = actions.add_parser(
        "save",
        help="write a baseline JSON file from run folder(s)",
        description="Write per-metric point estimates and the per-window values the gate's interval needs "
        "(every throughput and each operation's p95 latency, or the --metric list). Several runs are repetitions.",
    )
    save.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s) or a matrix folder")
    save.add_argument("--out", type=Path, required=True, help="baseline file to write, e.g. baseline.json")
    save.add_argument("--metric", action="append", help="metric to keep (repeatable; default: see above)")
    add_settings(save)
    save.set_defaults(func=cmd_baseline_save)


def cmd_baseline_save(args) -> int:
    from bench.analysis.gate import save_baseline

    print(save_baseline(args.runs, args.out, settings(args), args.metric))
    return 0
