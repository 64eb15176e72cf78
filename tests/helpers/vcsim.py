"""VMware's ESXi simulator (govmomi's simulator package, tools/vcsim/main.go) as the esxi tests run it.

The Go main is built once per source digest into a host-wide cache, under a lock (xdist workers
may ask at once), with Debian's golang-go and golang-github-vmware-govmomi-dev. Each simulator
serves TLS with a certificate from a CA the test made (openssl), so clients verify it as they
would a real host's; the password is given to it on its command line and to pacsbench through
the environment. A small OVA (export.py's descriptor, a tiny disk: the simulator discards disk
bytes) stands in for the guest image's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common.processes import stop_process
from helpers import ROOT

SOURCE = ROOT / "tools" / "vcsim" / "main.go"
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src" / "github.com" / "vmware" / "govmomi" / "simulator"
CACHE = Path(tempfile.gettempdir()) / "pacsbench-tests-vcsim"
PASSWORD_ENV = "PACSBENCH_TEST_ESXI_PASSWORD"
USER = "root"


def missing_tools() -> str | None:
    """What the simulator's build lacks here, in words; None when it can be built."""
    if shutil.which("go") is None:
        return "go (apt-get install golang-go)"
    if not GOVMOMI.is_dir():
        return "govmomi's simulator (apt-get install golang-github-vmware-govmomi-dev)"
    if shutil.which("openssl") is None:
        return "openssl"
    return None


def build() -> Path:
    """The simulator's binary for the current main.go, built here (about 15 s) if no test built it yet."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = CACHE / f"vcsim-{digest}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not binary.is_file():
                temp = binary.with_name(binary.name + ".part")
                environment = {
                    **os.environ,
                    "GO111MODULE": "off",
                    "GOPATH": str(GOPATH),
                    "GOCACHE": str(CACHE / "gocache"),
                    "GOFLAGS": "",
                }
                subprocess.run(
                    ["go", "build", "-o", str(temp), "."], cwd=SOURCE.parent, env=environment, check=True, timeout=300
                )
                temp.replace(binary)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return binary


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a server certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=pacsbench test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", "/CN=127.0.0.1")
    openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return ca, cert, key


@dataclass
class Simulator:
    """A running simulator: where it listens, how to trust it, and the password a client gives."""

    process: subprocess.Popen
    host: str
    port: int
    ca_file: Path
    thumbprint_sha1: str
    thumbprint_sha256: str
    password: str

    def stop(self) -> int | None:
        return stop_process(self.process, 10.0)

    def target(self, **settings) -> dict:
        """An esxi [target] table for this simulator (its one datastore and network), verified by the test's CA."""
        return {
            "kind": "esxi",
            "host": self.host,
            "api_port": self.port,
            "user": USER,
            "password_env": PASSWORD_ENV,
            "ca_file": str(self.ca_file),
            "datastore": "LocalDS_0",
            "network": "VM Network",
            **settings,
        }


def start(binary: Path, folder: Path, password: str = "pacsbench-test", vpx: bool = False) -> Simulator:
    """The simulator on a free port of 127.0.0.1 with a certificate signed by a fresh CA."""
    ca, cert, key = make_certificates(folder / "tls")
    log = folder / "vcsim.log"
    command = [str(binary), "-listen", "127.0.0.1:0", "-username", USER, "-password", password]
    command += ["-tlscert", str(cert), "-tlskey", str(key), "-cert-out", str(folder / "served.pem")]
    with log.open("ab") as errors:
        process = subprocess.Popen(
            command + (["-vpx"] if vpx else []), stdout=subprocess.PIPE, stderr=errors, start_new_session=True
        )
    line = process.stdout.readline()
    if not line:
        stop_process(process, 5.0)
        raise RuntimeError(f"vcsim did not start: {log.read_text()[-2000:]}")
    said = json.loads(line)
    host, _, port = said["url"].split("//", 1)[1].split("/", 1)[0].rpartition(":")
    return Simulator(process, host, int(port), ca, said["thumbprint_sha1"], said["thumbprint_sha256"], password)


def small_ova(out: Path, vcpus: int = 2, memory_mib: int = 2048) -> Path:
    """An OVA with export.py's descriptor and two tiny disks, system and data (the simulator discards disk bytes,
    so any will do)."""
    from bench.targets.vm.export import VM_NAME, OvfDisk, ovf_descriptor, sha256

    folder = out.with_name(out.name + ".parts")
    folder.mkdir(parents=True, exist_ok=True)
    vmdks = [folder / f"{VM_NAME}-disk{n}.vmdk" for n in (1, 2)]
    for vmdk in vmdks:
        vmdk.write_bytes(b"KDMV" + bytes(4092))
    ovf = folder / f"{VM_NAME}.ovf"
    disks = [OvfDisk(vmdk.name, vmdk.stat().st_size, 64 << 20) for vmdk in vmdks]
    ovf.write_bytes(ovf_descriptor(disks, vcpus, memory_mib))
    manifest = folder / f"{VM_NAME}.mf"
    manifest.write_text("".join(f"SHA256({p.name})= {sha256(p)}\n" for p in (ovf, *vmdks)))
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in (ovf, *vmdks, manifest):
            tar.add(path, arcname=path.name)
    shutil.rmtree(folder)
    return out
