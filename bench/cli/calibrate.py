"""`pacsbench calibrate`: the harness's own ceiling, measured against a null sink."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure the harness alone against a null sink; runs record this ceiling",
        description="Store fresh copies of pool instances (the locust users' C-STORE path, under gevent) over one "
        "association into a null sink (DCMTK storescp --ignore when installed, else the harness's own SCP in "
        "another process), time DCMTK storescu into the same sink; then retrieve by C-GET and C-MOVE "
        "(into the harness's "
        "Storage SCP) from a null source; then the DICOMweb users' STOW-RS into a null HTTP sink that reads and "
        "discards, and their WADO-RS of whole studies from it (its own process); keep the ceilings in the state "
        "folder ($PACSBENCH_STATE, else "
        "~/.local/state/pacsbench) with a fingerprint of host, profile, transfer syntax and version: a run uses "
        "only a calibration whose fingerprint matches its own. "
        "Runs record it in run.json['calibration']; reports flag figures above 80% of it as client-bound "
        "(C-STORE, C-GET/C-MOVE, STOW-RS and WADO-RS figures each against their own ceiling).",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="study profile (default: 2 MB instances, "
        "bench/benchmarks/instance2mb.toml); calibrate with your scenario's profile for exact ceilings",
    )
    p.add_argument("--transfer-syntax", default=None, metavar="NAME", help="default: the profile's")
    p.add_argument("--instances", type=int, default=200, help="instances stored per measurement (default 200)")
    p.add_argument(
        "--sink",
        choices=["auto", "dcmtk", "python"],
        default="auto",
        help="null sink: DCMTK storescp --ignore, the harness's SCP, or auto (DCMTK when installed)",
    )
    p.add_argument(
        "--no-retrieval",
        action="store_true",
        help="skip the retrieval ceiling (C-GET and C-MOVE from a null source into the harness)",
    )
    p.add_argument(
        "--no-dicomweb",
        action="store_true",
        help="skip the DICOMweb ceilings (STOW-RS into, and WADO-RS from, a null DICOMweb peer)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_calibrate)


def fingerprint_line(print_: dict) -> str:
    host = print_["host"]
    memory = f"{host['memory_bytes'] / 2**30:.1f} GiB" if host.get("memory_bytes") else "RAM unknown"
    return (
        f"{host['cpu_model']}, {host['cpus']} cores, {memory}, kernel {host['kernel']}, hypervisor "
        f"{host['hypervisor']}, container {host['container']}; {print_['profile']} {print_['transfer_syntax']}; "
        f"pacsbench {print_['harness_version']}; {print_['load_processes']} load process"
    )


def cmd_calibrate(args) -> int:
    from gevent import monkey

    monkey.patch_all()  # measure the path as locust runs it: cooperative sockets
    from bench.load.calibrate import calibrate

    entry = calibrate(
        args.profile,
        args.transfer_syntax,
        args.instances,
        args.sink,
        progress=not args.no_progress,
        with_retrieval=not args.no_retrieval,
        with_dicomweb=not args.no_dicomweb,
    )
    scu = entry["storescu"]
    if scu:
        print(
            f"DCMTK storescu into the same sink: {scu['instances_per_s']:.1f} instances/s, {scu['mb_per_s']:.1f} MB/s "
            f"(harness/storescu {entry['instances_per_s'] / max(scu['instances_per_s'], 1e-9):.2f}x)"
        )
    print(
        f"harness ceiling ({entry['profile']}, {entry['transfer_syntax']}, {entry['sink']}): "
        f"{entry['instances_per_s']:.1f} instances/s, {entry['mb_per_s']:.1f} MB/s, one association, one process"
    )
    for method, rates in (entry["retrieve"] or {}).items():
        print(
            f"harness retrieval ceiling, C-{method.upper()} from a null source: {rates['instances_per_s']:.1f} "
            f"instances/s, {rates['mb_per_s']:.1f} MB/s, one association, one process"
        )
    for request, rates in (entry["dicomweb"] or {}).items():
        if request in ("stow", "wado"):
            what = "STOW-RS into a null sink" if request == "stow" else "WADO-RS of whole studies from a null source"
            print(
                f"harness DICOMweb ceiling, {what}: {rates['instances_per_s']:.1f} instances/s, "
                f"{rates['mb_per_s']:.1f} MB/s, one connection, one process (it used "
                f"{rates['harness_cpu_share']:.0%} of a core, the peer {rates['peer_cpu_share']:.0%})"
            )
    print(f"fingerprint: {fingerprint_line(entry['fingerprint'])}")
    print(entry["path"])
    return 0
