"""Guest networking: QEMU user-mode (like VirtualBox NAT) or a tap on a bridge (like bridged networking).

User mode forwards ports on 127.0.0.1 only. The tap lives on a bridge inside a network namespace
the harness creates; a veth pair joins that bridge to the host, so the load reaches the guest's
own address the way it would reach a bridged VM on the LAN. Removing the namespace removes the
bridge, the tap and both veth ends; namespaces left by a killed run are removed on the next one.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

from bench.common.errors import UserError
from bench.common.processes import check_port_free, free_local_port
from bench.targets.vm.tools import require, require_root, run

GUEST_DICOM_PORT = 11112
GUEST_METRICS_PORT = 8080
NAMESPACE_PREFIX = "pacsbench-"
SUBNET_POOL = ipaddress.ip_network("10.213.0.0/16")  # one /24 per running guest, chosen free of host routes


class UserNetwork:
    """-netdev user with hostfwd on 127.0.0.1; the guest gets QEMU's usual 10.0.2.15 statically."""

    mode = "user"
    command_prefix: list[str] = []

    def __init__(self, host_port: int | None = None):
        if host_port:
            check_port_free(host_port)
        self.host_port = host_port or free_local_port()
        self.metrics_port = free_local_port()
        self.address = ("127.0.0.1", self.host_port)
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def qemu_args(self, nic: str) -> list[str]:
        forwards = (f"hostfwd=tcp:127.0.0.1:{self.host_port}-:{GUEST_DICOM_PORT},"
                    f"hostfwd=tcp:127.0.0.1:{self.metrics_port}-:{GUEST_METRICS_PORT}")
        return ["-netdev", f"user,id=net0,{forwards}", "-device", f"{nic},netdev=net0"]

    def kernel_args(self) -> list[str]:
        return ["pacsbench.ip=10.0.2.15/24", "pacsbench.gw=10.0.2.2"]

    def describe(self) -> dict:
        return {"mode": self.mode, "like": "VirtualBox NAT", "host_forward": f"127.0.0.1:{self.host_port}",
                "metrics_forward": f"127.0.0.1:{self.metrics_port}", "guest_address": "10.0.2.15"}


class TapNetwork:
    """A tap on a bridge in a private namespace, joined to the host by a veth pair."""

    mode = "tap"

    def __init__(self):
        require_root("tap networking")
        self.ip = require("ip")
        tag = f"{os.getpid()}x{id(self) % 10000}"
        self.namespace = f"{NAMESPACE_PREFIX}{tag}"
        self.host_veth = f"pbh{tag}"[:15]
        self.tap = "pbtap0"
        self.subnet: ipaddress.IPv4Network | None = None
        self.address = ("", GUEST_DICOM_PORT)
        self.metrics_url = ""

    @property
    def command_prefix(self) -> list[str]:
        return [self.ip, "netns", "exec", self.namespace]  # QEMU opens the tap inside the namespace

    def setup(self) -> None:
        remove_stale_namespaces(self.ip)
        self.subnet = free_subnet(self.ip)
        hosts = list(self.subnet.hosts())
        host_ip, guest_ip = hosts[0], hosts[1]
        prefix = self.subnet.prefixlen
        ns = [self.ip, "-n", self.namespace]
        try:
            for cmd in (
                [self.ip, "netns", "add", self.namespace],
                [*ns, "link", "set", "lo", "up"],
                [*ns, "link", "add", "br0", "type", "bridge"],
                [*ns, "link", "set", "br0", "up"],
                [*ns, "tuntap", "add", "dev", self.tap, "mode", "tap"],
                [*ns, "link", "set", self.tap, "master", "br0", "up"],
                [self.ip, "link", "add", self.host_veth, "type", "veth", "peer", "name", "pbpeer0",
                 "netns", self.namespace],
                [*ns, "link", "set", "pbpeer0", "master", "br0", "up"],
                [self.ip, "address", "add", f"{host_ip}/{prefix}", "dev", self.host_veth],
                [self.ip, "link", "set", self.host_veth, "up"],
            ):
                run(cmd, 30, what="ip (tap network set-up)")
        except BaseException:
            self.teardown()
            raise
        self.host_ip, self.guest_ip = str(host_ip), str(guest_ip)
        self.address = (self.guest_ip, GUEST_DICOM_PORT)
        self.metrics_url = f"http://{self.guest_ip}:{GUEST_METRICS_PORT}"

    def teardown(self) -> None:
        subprocess.run([self.ip, "link", "delete", self.host_veth], capture_output=True, timeout=30)
        subprocess.run([self.ip, "netns", "delete", self.namespace], capture_output=True, timeout=30)

    def qemu_args(self, nic: str) -> list[str]:
        # vhost=off: /dev/vhost-net is often missing (and is not what VirtualBox or ESXi use either).
        return ["-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no,vhost=off",
                "-device", f"{nic},netdev=net0"]

    def kernel_args(self) -> list[str]:
        return [f"pacsbench.ip={self.guest_ip}/{self.subnet.prefixlen}"]

    def describe(self) -> dict:
        return {"mode": self.mode, "like": "bridged networking", "namespace": self.namespace,
                "bridge": "br0", "tap": self.tap, "vhost": "off", "host_veth": self.host_veth,
                "subnet": str(self.subnet), "guest_address": getattr(self, "guest_ip", None)}


def free_subnet(ip: str) -> ipaddress.IPv4Network:
    routes = json.loads(run([ip, "-j", "route", "show", "table", "all"], 30) or "[]")
    used = []
    for route in routes:
        try:
            used.append(ipaddress.ip_network(route.get("dst", ""), strict=False))
        except ValueError:
            continue  # "default", multicast names and the like
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return candidate
    raise UserError(f"no free /24 left in {SUBNET_POOL} for a tap network")


def remove_stale_namespaces(ip: str) -> None:
    """Namespaces of pacsbench processes that no longer exist (a run killed with SIGKILL)."""
    for name in run([ip, "netns", "list"], 30).split():
        if not name.startswith(NAMESPACE_PREFIX):
            continue
        pid = name.removeprefix(NAMESPACE_PREFIX).split("x")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=30)
            subprocess.run([ip, "link", "delete", f"pbh{name.removeprefix(NAMESPACE_PREFIX)}"[:15]],
                           capture_output=True, timeout=30)


def make_network(mode: str, host_port: int | None):
    return TapNetwork() if mode == "tap" else UserNetwork(host_port)
