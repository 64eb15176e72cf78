"""Targets: the archive under test. Start it (or not), wait until it answers, describe, stop.

Kinds: native (the reference archive as a local process), kvm and tcg (the same archive in a
QEMU guest), orthanc and dcmtk (installed archives with a generated configuration), remote.
"""

from __future__ import annotations

from bench.load.scenario import ClientSpec, TargetSpec
from bench.targets.installed import DcmqrscpTarget, OrthancTarget
from bench.targets.native import NativeTarget
from bench.targets.remote import RemoteTarget
from bench.targets.target import Target
from bench.targets.vm.target import GuestTarget

__all__ = ["Target", "make_target"]


def make_target(spec: TargetSpec, client: ClientSpec, progress: bool = True, in_namespace: bool = False) -> Target:
    """The one way to a Target: native, kvm, tcg, orthanc, dcmtk or remote, from the scenario's [target].

    in_namespace: a native archive runs in a network namespace of its own (bench.load.scenario.archive_in_namespace)."""
    if spec.kind == "native":
        return NativeTarget(spec, client, in_namespace)
    if spec.kind in ("kvm", "tcg"):
        return GuestTarget(spec, client, progress)  # progress: the image build's step lines
    if spec.kind in ("orthanc", "dcmtk"):
        return (OrthancTarget if spec.kind == "orthanc" else DcmqrscpTarget)(spec, client)
    return RemoteTarget(spec, client)
