"""Targets: the archive under test. Start it (or not), wait until it answers, describe, stop.

Kinds: native (the reference archive as a local process), kvm and tcg (the same archive in a
QEMU guest), esxi (its OVA deployed on VMware ESXi), virtualbox (the same OVA in VirtualBox, through
VBoxManage), orthanc and dcmtk (installed archives with a generated configuration), remote.
"""

from __future__ import annotations

from bench.scenario.settings import ClientSpec
from bench.scenario.targets import EsxiSpec, NativeSpec, TargetSpec, VirtualBoxSpec, VmSpec
from bench.targets.esxi.target import EsxiTarget
from bench.targets.installed import DcmqrscpTarget, OrthancTarget
from bench.targets.native import NativeTarget
from bench.targets.remote import RemoteTarget
from bench.targets.target import Target
from bench.targets.virtualbox import VirtualBoxTarget
from bench.targets.vm.target import GuestTarget

__all__ = ["Target", "make_target"]


def make_target(spec: TargetSpec, client: ClientSpec, progress: bool = True, in_namespace: bool = False) -> Target:
    """The one way to a Target (native, kvm, tcg, esxi, virtualbox, orthanc, dcmtk, remote), from [target].

    in_namespace: a native archive runs in a network namespace of its own (bench.scenario.file.archive_in_namespace)."""
    if isinstance(spec, NativeSpec):
        return NativeTarget(spec, client, in_namespace)
    if isinstance(spec, VmSpec):
        return GuestTarget(spec, client, progress)  # progress: the image build's step lines (kvm, tcg)
    if isinstance(spec, EsxiSpec):
        return EsxiTarget(spec, client, progress)  # progress: the upload's bar, the deployment's steps
    if isinstance(spec, VirtualBoxSpec):
        return VirtualBoxTarget(spec, client, progress)  # progress: the image build and export, when no OVA is given
    # The kinds whose Target takes the spec and the client alone.
    targets: dict[str, type[Target]] = {"orthanc": OrthancTarget, "dcmtk": DcmqrscpTarget, "remote": RemoteTarget}
    return targets[spec.kind](spec, client)
