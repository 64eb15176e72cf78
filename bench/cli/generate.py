"""`pacsbench generate`: write synthetic DSA studies to a folder."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="write synthetic DSA (XA multi-frame) studies to a folder",
        description="Synthesize DSA studies: one XA multi-frame instance per run (series), several runs per "
        "study, several studies per patient. Deterministic for a seed; each study gets its own UIDs. "
        "Profiles: bench/studies/profiles/*.toml or a path to your own .toml.",
    )
    p.add_argument(
        "--profile", default="dsa-unit", help="profile name or .toml path (default dsa-unit, ~30 MB studies)"
    )
    p.add_argument("--studies", type=int, default=1, help="number of studies (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same files (default 1)")
    p.add_argument(
        "--transfer-syntax",
        default=None,
        metavar="NAME",
        help="explicit, rle, jpeg-ls, j2k or jpeg-sv1 (default: the profile's, usually explicit)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default results/studies-PROFILE-seedS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from bench.studies.encode import transfer_syntax
    from bench.studies.generate import generate
    from bench.studies.profile import load_profile

    profile = load_profile(args.profile)
    syntax = transfer_syntax(args.transfer_syntax or profile.transfer_syntax)
    out = args.out or Path("results") / f"studies-{profile.name}-seed{args.seed}"
    totals = generate(profile, args.studies, args.seed, out, progress=not args.no_progress, syntax_name=syntax.name)
    print(f"wrote {totals.line()} ({syntax.name}) to {out}")
    return 0
