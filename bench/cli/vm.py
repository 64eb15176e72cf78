"""`pacsbench vm build|check|export|clean`: the guest image for the kvm and tcg targets and for any hypervisor;
the VMs an esxi target left on its host."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "vm",
        help="the guest image: build it, check KVM, export it for VirtualBox or ESXi",
        description="The reference archive in a Debian guest for the kvm and tcg targets "
        "and for any hypervisor (export).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build the guest image (cached; rebuilt only when its inputs change)",
        description="debootstrap a small Debian 12 guest with the reference archive "
        "starting on boot. Needs root and the Debian mirror. Prints the image path last.",
    )
    build.add_argument("--force", action="store_true", help="rebuild even if a cached image matches")
    build.add_argument("--no-progress", action="store_true", help="no progress lines")
    build.set_defaults(func=cmd_vm_build)
    check = actions.add_parser("check", help="can KVM (and TCG) boot the guest's kernel here? (bounded probe)")
    check.set_defaults(func=cmd_vm_check)
    export = actions.add_parser(
        "export",
        help="write the guest as an OVA (VirtualBox, ESXi), VMDK or qcow2",
        description="Export the guest image. The OVA's VM (one descriptor for ESXi and VirtualBox: docs/targets.md) "
        "has the system disk and a blank 1 GiB data disk on IDE, and an E1000 card; grow the data disk before the "
        "first boot and the guest formats it. The archive takes its address by DHCP and answers on port 11112 (AE "
        "PACSBENCH), or as the VMware guestinfo.pacsbench.* keys say on ESXi. --format vmdk or qcow2: the system "
        "disk alone.",
    )
    export.add_argument("--format", choices=["ova", "vmdk", "qcow2"], default="ova", help="default ova")
    export.add_argument("--out", type=Path, required=True, help="file to write, e.g. pacsbench.ova")
    export.add_argument("--vcpus", type=int, default=2, help="vCPUs in the OVA's VM (default 2)")
    export.add_argument("--memory-mib", type=int, default=2048, help="memory of the OVA's VM (default 2048)")
    export.set_defaults(func=cmd_vm_export)
    clean = actions.add_parser(
        "clean",
        help="remove the VMs pacsbench left on an ESXi host (killed runs, keep = true)",
        description="Connect to the ESXi host or vCenter of the scenario's esxi target (password from its "
        "password_env) and power off and destroy every VM whose annotation says pacsbench made it, except "
        "those of a run still going on this machine. Prints the names removed.",
    )
    clean.add_argument("--target", type=Path, required=True, metavar="SCENARIO", help="a scenario with an esxi target")
    clean.add_argument(
        "--name", default=None, help="the [targets.NAME] table to use (default: the scenario's [target])"
    )
    clean.set_defaults(func=cmd_vm_clean)


def cmd_vm_build(args) -> int:
    from bench.targets.vm.image import build_image

    image = build_image(progress=not args.no_progress, force=args.force)
    print(image.disk)
    return 0


def cmd_vm_check(args) -> int:
    from bench.targets.vm.image import ensure_image
    from bench.targets.vm.kvm import probe

    kernel = ensure_image().kernel
    results = [probe(kernel, accelerator) for accelerator in ("kvm", "tcg")]
    for result in results:
        print(
            f"{result.accelerator}: {'boots' if result.boots else 'cannot boot'} a guest: {result.reason} "
            f"({result.seconds:.1f} s)"
        )
    return 0 if any(r.boots for r in results) else 1


def cmd_vm_export(args) -> int:
    from bench.targets.vm.export import export_image

    print(export_image(args.format, args.out, args.vcpus, args.memory_mib))
    return 0


def cmd_vm_clean(args) -> int:
    from bench.common.errors import UserError
    from bench.scenario.file import load_scenario
    from bench.scenario.targets import EsxiSpec
    from bench.targets.esxi.connection import connect
    from bench.targets.esxi.machine import remove_leftovers

    scenario = load_scenario(args.target)
    spec = scenario.targets.get(args.name) if args.name else scenario.target
    if not isinstance(spec, EsxiSpec):
        what = f"[targets.{args.name}]" if args.name else "[target]"
        raise UserError(f'{args.target}: its {what} is not an esxi target (kind = "esxi")')
    session = connect(spec)
    try:
        removed = remove_leftovers(session, every=True)
    finally:
        session.close()
    for name in removed:
        print(name)
    print(f"removed {len(removed)} pacsbench VM(s) from {spec.host}", file=sys.stderr)
    return 0
