"""`pacsbench verify`: retrieve what a run's archive acknowledged and compare it with what was sent."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="retrieve every instance a run's archive acknowledged and compare it with what was sent",
        description="C-GET every study listed in the run's sent.csv and compare each instance's dataset digest with "
        "the one sent (and with what workstations retrieved, when they hashed it). A native archive is restarted on "
        "the run's kept data (keep_data = true). Writes verify.json and run.json['verify']; exit 1 on any loss or "
        "difference.",
    )
    p.add_argument("run_dir", type=Path, help="a run folder")
    p.add_argument(
        "--protocol",
        choices=("dimse", "dicomweb"),
        default="dimse",
        help="retrieve by C-GET (dimse, the default) or by QIDO-RS and WADO-RS at the archive's DICOMweb base URL "
        "(dicomweb: run.json's target.dicomweb_url; a native archive is restarted with DICOMweb on)",
    )
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from bench.runs.verify import summary_line, verify_run

    result = verify_run(args.run_dir, args.protocol)
    print(summary_line(result))
    return 0 if result.ok else 1
