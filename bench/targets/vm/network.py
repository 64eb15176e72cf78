"""Guest networking: QEMU user-mode (like VirtualBox NAT) or a tap on a bridge (like bridged networking).

User mode forwards ports on 127.0.0.1 only. The tap lives on a bridge inside a network namespace
the harness creates (bench.common.netns); a veth pair joins that bridge to the host, so the load
reaches the guest's own address the way it would reach a bridged VM on the LAN. Removing the
namespace removes the bridge, the tap and both veth ends; namespaces left by a killed run are
removed on the next one.
"""

from __future__ import annotations

from bench.common.netns import VethNamespace
from bench.common.processes import check_port_free, free_local_port, run
from bench.targets.guest_settings import dicomweb_url
from bench.targets.vm.tools import require, require_root
from server_under_test.guest import DEFAULTS as GUEST_DEFAULTS

# Where the guest's archive listens: its defaults, which a guest handed no settings (VirtualBox) keeps.
GUEST_DICOM_PORT = int(GUEST_DEFAULTS["port"])
GUEST_METRICS_PORT = int(GUEST_DEFAULTS["metrics_port"])
GUEST_DICOMWEB_PORT = int(GUEST_DEFAULTS["dicomweb_port"])


class UserNetwork:
    """-netdev user with hostfwd on 127.0.0.1; the guest gets QEMU's usual 10.0.2.15 statically."""

    mode = "user"
    command_prefix: list[str] = []

    def __init__(self, host_port: int | None = None, dicomweb: bool = False):
        if host_port:
            check_port_free(host_port)
        self.host_port = host_port or free_local_port()
        self.metrics_port = free_local_port()
        self.dicomweb_port = free_local_port() if dicomweb else None
        self.address = ("127.0.0.1", self.host_port)
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"
        self.dicomweb_url = dicomweb_url("127.0.0.1", self.dicomweb_port) if dicomweb else None

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def qemu_args(self, nic: str) -> list[str]:
        ports = [(self.host_port, GUEST_DICOM_PORT), (self.metrics_port, GUEST_METRICS_PORT)]
        ports += [(self.dicomweb_port, GUEST_DICOMWEB_PORT)] if self.dicomweb_port else []
        forwards = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in ports)
        return ["-netdev", f"user,id=net0,{forwards}", "-device", f"{nic},netdev=net0"]

    def kernel_args(self) -> list[str]:
        return ["pacsbench.ip=10.0.2.15/24", "pacsbench.gw=10.0.2.2"]

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "like": "VirtualBox NAT",
            "host_forward": f"127.0.0.1:{self.host_port}",
            "metrics_forward": f"127.0.0.1:{self.metrics_port}",
            "dicomweb_forward": f"127.0.0.1:{self.dicomweb_port}" if self.dicomweb_port else None,
            "guest_address": "10.0.2.15",
        }


class TapNetwork:
    """A tap on a bridge in a private namespace, joined to the host by a veth pair (bench.common.netns)."""

    mode = "tap"

    def __init__(self, dicomweb: bool = False):
        require_root("tap networking")
        self.namespace = VethNamespace(require("ip"))
        self.tap = "pbtap0"
        self.dicomweb = dicomweb
        self.address = ("", GUEST_DICOM_PORT)
        self.metrics_url = ""
        self.dicomweb_url: str | None = None

    @property
    def command_prefix(self) -> list[str]:
        return self.namespace.exec_prefix  # QEMU opens the tap inside the namespace

    def setup(self) -> None:
        ns = self.namespace
        ns.create()
        try:
            for cmd in (
                ns.inside("link", "add", "br0", "type", "bridge"),
                ns.inside("link", "set", "br0", "up"),
                ns.inside("tuntap", "add", "dev", self.tap, "mode", "tap"),
                ns.inside("link", "set", self.tap, "master", "br0", "up"),
                ns.inside("link", "set", ns.peer_veth, "master", "br0", "up"),
            ):
                run(cmd, 30, what="ip (tap network set-up)")
        except BaseException:
            self.teardown()
            raise
        # The guest takes the namespace end's address: the veth end itself is a bridge port.
        self.host_ip, self.guest_ip = ns.host_ip, ns.peer_ip
        self.address = (self.guest_ip, GUEST_DICOM_PORT)
        self.metrics_url = f"http://{self.guest_ip}:{GUEST_METRICS_PORT}"
        self.dicomweb_url = dicomweb_url(self.guest_ip, GUEST_DICOMWEB_PORT) if self.dicomweb else None

    def teardown(self) -> None:
        self.namespace.remove()

    def qemu_args(self, nic: str) -> list[str]:
        # vhost=off: /dev/vhost-net is often missing (and is not what VirtualBox or ESXi use either).
        return [
            "-netdev",
            f"tap,id=net0,ifname={self.tap},script=no,downscript=no,vhost=off",
            "-device",
            f"{nic},netdev=net0",
        ]

    def kernel_args(self) -> list[str]:
        return [f"pacsbench.ip={self.guest_ip}/{self.namespace.subnet.prefixlen}"]

    def describe(self) -> dict:
        ns = self.namespace
        return {
            "mode": self.mode,
            "like": "bridged networking",
            "namespace": ns.name,
            "bridge": "br0",
            "tap": self.tap,
            "vhost": "off",
            "host_veth": ns.host_veth,
            "subnet": str(ns.subnet),
            "guest_address": getattr(self, "guest_ip", None),
        }


def make_network(mode: str, host_port: int | None, dicomweb: bool = False):
    """The guest's network; with `dicomweb`, its DICOMweb port reachable too (forwarded in user mode)."""
    return TapNetwork(dicomweb) if mode == "tap" else UserNetwork(host_port, dicomweb)
