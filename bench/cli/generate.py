"""`pacsbench generate`: write synthetic studies (DSA, CT, MR, PET-CT, DX, MG, US) to a folder."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="write synthetic studies (DSA, CT, MR, PET-CT, DX, MG, US) to a folder",
        description="Synthesize studies of a profile: DSA profiles (dsa-unit, tiny, ...) write one XA multi-frame "
        "instance per run; modality profiles (ct, mr, pet-ct, pet-ct-large, dx, mg, us) write series of "
        "instances of their IOD. Several studies per patient. Deterministic for a seed; each study gets its own "
        "UIDs. Prints each study's size. Profiles: bench/studies/profiles/*.toml or a path to your own .toml.",
    )
    p.add_argument(
        "--profile", default="dsa-unit", help="profile name or .toml path (default dsa-unit, ~30 MB studies)"
    )
    p.add_argument("--studies", type=int, default=1, help="number of studies (default 1)")
    p.add_argument(
        "--scale",
        type=float,
        default=None,
        help="modality profiles: keep this share of each series' instances, at least one (e.g. 0.01 for a small "
        "test version of a 24,000-instance study; default: the profile's, usually 1)",
    )
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
    from bench.common.errors import UserError
    from bench.studies.encode import transfer_syntax
    from bench.studies.profile import StudyProfile, load_profile
    from bench.studies.series import generate

    profile = load_profile(args.profile)
    if args.scale is not None:
        if not isinstance(profile, StudyProfile):
            raise UserError(f"--scale applies to modality profiles; {profile.name} is a DSA profile")
        if not 0 < args.scale <= 1:
            raise UserError(f"--scale must be in (0, 1] (got {args.scale:g})")
        profile = profile.scaled(args.scale)
    syntax = transfer_syntax(args.transfer_syntax or profile.transfer_syntax)
    out = args.out or Path("results") / f"studies-{profile.name}-seed{args.seed}"
    totals = generate(profile, args.studies, args.seed, out, progress=not args.no_progress, syntax_name=syntax.name)
    for folder, instances, frames, size in totals.per_study:
        print(f"{folder}: {instances} instances, {frames} frames, {size / 1e6:.1f} MB")
    print(f"wrote {totals.line()} ({syntax.name}) to {out}")
    return 0
