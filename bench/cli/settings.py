"""Options shared by the verbs that read run folders (report, compare, gate, baseline):
the analysis settings (--warmup, --window) and the published claims (--claims)."""

from __future__ import annotations

from pathlib import Path


def add_settings(p) -> None:
    p.add_argument(
        "--warmup",
        default=None,
        help="leading part of each run not measured: a share such as 10%% "
        "(of first request to last response) or seconds such as 5s (default 10%%)",
    )
    p.add_argument(
        "--window",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time window for timelines and the bootstrap's resampling unit (default 1 s)",
    )


def add_claims(p) -> None:
    p.add_argument(
        "--claims",
        type=Path,
        action="append",
        metavar="TOML",
        help="published claims to check (repeatable; default: bench/analysis/claims/*.toml, Kagadis et al. 2011)",
    )


def settings(args):
    """The analysis Settings the --warmup and --window options ask for."""
    from bench.analysis.aggregate import DEFAULT_WARMUP, DEFAULT_WINDOW_SECONDS, Settings, Warmup

    chosen = args.warmup is not None or args.window is not None
    return Settings(
        Warmup.parse(args.warmup) if args.warmup is not None else DEFAULT_WARMUP,
        args.window if args.window is not None else DEFAULT_WINDOW_SECONDS,
        chosen,
    )
