"""Network namespaces joined to this one by a veth pair: another host, as far as the network goes.

A guest's tap network bridges the namespace end (bench.targets.vm.network); a native archive
with a network-down fault listens inside one (bench.targets.native); a test gives it an
address and runs a load worker inside. Each namespace gets a private /24 chosen free of the
host's routes and addresses (under a host-wide lock, so two runs or tests making namespaces at
once cannot take the same one): this end takes the first address, the namespace the second. Removing the
namespace removes both veth ends; namespaces whose creating process no longer exists (a run
killed with SIGKILL) are removed before a new one is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from pathlib import Path

import psutil

from bench.common.errors import UserError
from bench.common.processes import run

NAMESPACE_PREFIX = "pacsbench-"
SUBNET_POOL = ipaddress.ip_network("10.213.0.0/16")  # one /24 per namespace, chosen free of host routes
SUBNET_LOCK = Path("/run/lock/pacsbench-netns.lock")  # held from choosing a subnet until this end has its address
PEER_VETH = "pbpeer0"  # the veth end inside the namespace (names are per namespace)


class VethNamespace:
    """A namespace named after this process, with a veth pair to it; `ip` is the ip(8) tool's path."""

    def __init__(self, ip: str):
        self.ip = ip
        tag = f"{os.getpid()}x{id(self) % 10000}"  # the pid lets a later run tell a stale namespace
        self.name = f"{NAMESPACE_PREFIX}{tag}"
        self.host_veth = host_veth_name(self.name)
        self.peer_veth = PEER_VETH
        self.subnet: ipaddress.IPv4Network | None = None
        self.host_ip = self.peer_ip = ""

    @property
    def exec_prefix(self) -> list[str]:
        """A command line's start that runs the rest inside the namespace."""
        return [self.ip, "netns", "exec", self.name]

    def inside(self, *args: str) -> list[str]:
        """An ip(8) command acting inside the namespace."""
        return [self.ip, "-n", self.name, *args]

    def create(self) -> None:
        """The namespace (loopback up), the veth pair, and this end's address; removed again on failure."""
        remove_stale_namespaces(self.ip)
        try:
            with subnet_lock():
                self.subnet = free_subnet(self.ip)
                hosts = list(self.subnet.hosts())
                self.host_ip, self.peer_ip = str(hosts[0]), str(hosts[1])
                self._make()
        except BaseException:
            self.remove()
            raise

    def _make(self) -> None:
        for cmd in (
            [self.ip, "netns", "add", self.name],
            self.inside("link", "set", "lo", "up"),
            [
                self.ip,
                "link",
                "add",
                self.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                self.peer_veth,
                "netns",
                self.name,
            ],
            [self.ip, "address", "add", f"{self.host_ip}/{self.subnet.prefixlen}", "dev", self.host_veth],
            [self.ip, "link", "set", self.host_veth, "up"],
        ):
            run(cmd, 30, what="ip (network namespace set-up)")

    def address_peer(self) -> None:
        """Give the namespace end its address and bring it up: the namespace is then a host on the subnet."""
        for cmd in (
            self.inside("address", "add", f"{self.peer_ip}/{self.subnet.prefixlen}", "dev", self.peer_veth),
            self.inside("link", "set", self.peer_veth, "up"),
        ):
            run(cmd, 30, what="ip (network namespace set-up)")

    def set_host_link(self, up: bool) -> None:
        """This end's link up or down: down cuts the namespace off (a pulled cable), as a network-down fault does."""
        run([self.ip, "link", "set", self.host_veth, "up" if up else "down"], 30, what="ip (veth link)")

    def describe(self) -> dict:
        return {
            "namespace": self.name,
            "host_veth": self.host_veth,
            "subnet": str(self.subnet),
            "host_address": self.host_ip,
            "namespace_address": self.peer_ip,
        }

    def remove(self) -> None:
        remove_namespace(self.ip, self.name)


def host_veth_name(namespace: str) -> str:
    return f"pbh{namespace.removeprefix(NAMESPACE_PREFIX)}"[:15]  # interface names: 15 characters at most


def remove_namespace(ip: str, name: str) -> None:
    """Both, whatever exists of them (deleting the host end first also ends a half-made pair)."""
    subprocess.run([ip, "link", "delete", host_veth_name(name)], capture_output=True, timeout=30)
    subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=30)


@contextlib.contextmanager
def subnet_lock():
    """A host-wide lock (flock, released when the holder dies) around choosing and taking a subnet."""
    SUBNET_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with SUBNET_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def used_networks(ip: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Networks of the host's routes and of its interfaces' addresses.

    Addresses count too: a veth whose link is down (a network-down fault) keeps its address but
    loses its route, and its subnet is still taken.
    """
    routes = json.loads(run([ip, "-j", "route", "show", "table", "all"], 30) or "[]")
    interfaces = json.loads(run([ip, "-j", "address", "show"], 30) or "[]")
    prefixes = [route.get("dst", "") for route in routes]
    prefixes += [f"{a['local']}/{a['prefixlen']}" for i in interfaces for a in i.get("addr_info", []) if "local" in a]
    used = []
    for prefix in prefixes:
        try:
            used.append(ipaddress.ip_network(prefix, strict=False))
        except ValueError:
            continue  # "default", multicast names and the like
    return used


def free_subnet(ip: str) -> ipaddress.IPv4Network:
    used = used_networks(ip)
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return candidate
    raise UserError(f"no free /24 left in {SUBNET_POOL} for a network namespace")


def remove_stale_namespaces(ip: str) -> None:
    """Namespaces of pacsbench processes that no longer exist (a run killed with SIGKILL)."""
    for name in run([ip, "netns", "list"], 30).split():
        if not name.startswith(NAMESPACE_PREFIX):
            continue
        pid = name.removeprefix(NAMESPACE_PREFIX).split("x")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            remove_namespace(ip, name)
