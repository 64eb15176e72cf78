"""The guest image: a small Debian system that boots into the reference archive.

debootstrap (minbase) + Debian's generic kernel (its initrd carries virtio and the AHCI, IDE,
PVSCSI, LSI, E1000 and VMXNET3 drivers VirtualBox and ESXi present) + open-vm-tools (on ESXi: the
guest's address for the deployer, and vmware-rpctool, which reads the archive's settings from
guestinfo) + server_under_test and its Python dependencies (with their own, at the versions the
harness runs), installed offline from wheels the host downloaded for the guest's CPython and glibc.
The root file system is made with `mkfs.ext4 -d` (no loop devices) and put behind an MBR with GRUB,
so the same disk boots with QEMU's -kernel (settings on the kernel command line) or from
its own boot loader (an exported OVA: DHCP, settings from VMware guestinfo or the defaults).

Images are cached under <cache>/vm/images/<inputs hash>/ and rebuilt only when an input changes:
the package lists, the Python package versions (every distribution the archive's imports pull in), the
guest's files and server_under_test's source.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.common.errors import UserError
from bench.common.paths import cache_root, remove_tree
from bench.common.processes import run
from bench.targets.vm.tools import require, require_root

IMAGE_FORMAT = 2  # bump when the build recipe changes in a way the inputs below do not show
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BASE_PACKAGES = ["systemd-sysv", "udev", "kmod", "iproute2", "python3", "python3-venv"]
# grub-pc-bin only provides grub-mkimage and the BIOS modules: the boot loader is assembled by hand.
# lz4: the initrd unpacks several seconds faster than gzip under emulation.
KERNEL_PACKAGES = ["linux-image-amd64", "grub-pc-bin", "lz4"]
# open-vm-tools: VMware Tools for ESXi (its units start only under VMware: ConditionVirtualization=vmware).
GUEST_TOOLS_PACKAGES = ["open-vm-tools"]
# The initrd holds exactly these (MODULES=list), not every storage driver (MODULES=most: 35 MB, ~20 s
# more per boot under TCG): what QEMU, VirtualBox and ESXi present as disk and network, plus ext4.
INITRD_MODULES = [
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "ata_piix",
    "ata_generic",
    "ahci",
    "sd_mod",
    "nvme",
    "mptspi",
    "mptsas",
    "vmw_pvscsi",
    "e1000",
    "e1000e",
    "vmxnet3",
    "ext4",
    "crc32c_generic",
]
INITRD_CONF = "MODULES=list\nCOMPRESS=lz4\n"
# server_under_test's own imports (aiohttp: its DICOMweb side); what these require comes along (python_versions).
PYTHON_PACKAGES = ["pydicom", "pynetdicom", "prometheus-client", "aiohttp"]
# The guest's interpreter and C library (Debian 12: CPython 3.11, glibc 2.36): wheels are chosen for them, so
# aiohttp, multidict, yarl, frozenlist and propcache run compiled as they do natively, not as their slower
# pure-Python fallbacks.
GUEST_PYTHON = "3.11"
GUEST_MARKERS = {"python_version": GUEST_PYTHON, "python_full_version": "3.11.2", "sys_platform": "linux"}
GUEST_GLIBC_MINOR = 36
ROOT_LABEL = "pbroot"
DATA_LABEL = "pbdata"
ROOT_FS_BYTES = 4 << 30  # sparse; an exported guest keeps its archive here
PARTITION_START = 1 << 20
GUEST_VENV = "/opt/pacsbench/venv"
GUEST_DATA = "/var/lib/pacsbench"
BASE_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=tty0 console=ttyS0,115200 net.ifnames=0"
GRUB_MODULES = ["biosdisk", "part_msdos", "ext2", "linux", "search", "search_label"]

ARCHIVE_UNIT = f"""[Unit]
Description=pacsbench reference archive (settings from the kernel command line, VMware guestinfo or defaults)
After=local-fs.target systemd-udevd.service

[Service]
ExecStart={GUEST_VENV}/bin/python -m server_under_test.guest
# A crashed or killed archive comes back by itself, as a production archive's service would.
Restart=on-failure
RestartSec=1
StandardOutput=journal+console
StandardError=journal+console
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
"""
# DHCP unless the harness gave a static address on the kernel command line (then the guest
# entry point configures the interface itself, without waiting for a DHCP server).
DHCP_NETWORK = """[Match]
Name=eth* en*
KernelCommandLine=!pacsbench.ip

[Network]
DHCP=ipv4
"""
FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,noatime 0 0\n"
POLICY_RC = "#!/bin/sh\nexit 101\n"  # no daemon may start inside the chroot


@dataclass(frozen=True)
class GuestImage:
    folder: Path

    @property
    def disk(self) -> Path:
        return self.folder / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.folder / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.img"

    @property
    def info(self) -> dict:
        return json.loads((self.folder / "image.json").read_text())


def vm_cache() -> Path:
    """$PACSBENCH_VM_CACHE, else <pacsbench cache>/vm."""
    return Path(os.environ.get("PACSBENCH_VM_CACHE") or cache_root() / "vm").absolute()


def server_package() -> Path:
    """server_under_test's folder (found, not imported: the harness only packages it)."""
    return Path(importlib.util.find_spec("server_under_test").origin).parent


def server_source_digest() -> str:
    package = server_package()
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def python_versions() -> dict[str, str]:
    """The guest gets exactly the versions the harness runs natively: the same archive in both. That is
    PYTHON_PACKAGES and every distribution they require in the guest (markers read for the guest's Python, no
    extras), so an update of any of them here makes a new image."""
    versions: dict[str, str] = {}
    wanted = list(PYTHON_PACKAGES)
    try:
        while wanted:
            name = canonicalize_name(wanted.pop())
            if name in versions:
                continue
            versions[name] = metadata.version(name)
            for line in metadata.requires(name) or []:
                requirement = Requirement(line)
                if requirement.marker is None or requirement.marker.evaluate({**GUEST_MARKERS, "extra": ""}):
                    wanted.append(requirement.name)
    except metadata.PackageNotFoundError as exc:
        raise UserError(f"{exc.name} is not installed here; install pacsbench first (pip install -e .)") from None
    return dict(sorted(versions.items()))


def guest_platforms() -> list[str]:
    """The wheel platform tags the guest's glibc takes, newest first (pip does not widen a --platform by itself)."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(GUEST_GLIBC_MINOR, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def image_inputs() -> dict:
    return {
        "format": IMAGE_FORMAT,
        "suite": SUITE,
        "mirror": MIRROR,
        "security_mirror": SECURITY_MIRROR,
        "base_packages": BASE_PACKAGES,
        "kernel_packages": KERNEL_PACKAGES,
        "guest_tools_packages": GUEST_TOOLS_PACKAGES,
        "initrd_modules": INITRD_MODULES,
        "python": python_versions(),
        "wheels_for": f"CPython {GUEST_PYTHON}, glibc 2.{GUEST_GLIBC_MINOR}",
        "server_under_test": server_source_digest(),
        "cmdline": BASE_CMDLINE,
        "files": hashlib.sha256((ARCHIVE_UNIT + DHCP_NETWORK + FSTAB + INITRD_CONF).encode()).hexdigest(),
    }


def inputs_digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def cached_image() -> GuestImage | None:
    image = GuestImage(vm_cache() / "images" / inputs_digest(image_inputs()))
    return image if (image.folder / "image.json").is_file() else None


def ensure_image(progress: bool = True) -> GuestImage:
    return cached_image() or build_image(progress=progress)


class Steps:
    """Numbered progress lines on stderr with each step's duration."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.number = total, enabled, 0
        self.started = time.monotonic()

    def __call__(self, what: str) -> None:
        self.number += 1
        if self.enabled:
            elapsed = time.monotonic() - self.started
            print(f"[{self.number}/{self.total} {elapsed:5.0f} s] {what}", file=sys.stderr, flush=True)


def build_image(progress: bool = True, force: bool = False) -> GuestImage:
    """Build the guest image for the current inputs (or return the cached one unless `force`)."""
    require_root("building the guest image")
    for tool in ("debootstrap", "qemu-img", "sfdisk", "mkfs.ext4", "unshare"):
        require(tool)
    inputs = image_inputs()
    image = GuestImage(vm_cache() / "images" / inputs_digest(inputs))
    if image.folder.joinpath("image.json").is_file() and not force:
        return image
    work = vm_cache() / f"build-{image.folder.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "build.log"
    steps = Steps(7, progress)
    started = time.monotonic()
    try:
        root = work / "root"
        steps(f"debootstrap {SUITE} (minbase) into {root} (log: {log})")
        debootstrap(root, log)
        steps("kernel, boot loader modules, open-vm-tools and updates inside the chroot")
        install_system(root, log)
        steps(f"Python packages {inputs['python']} offline from wheels, and server_under_test")
        install_archive(root, work / "wheels", inputs["python"], log)
        steps("guest configuration: archive service, network, fstab")
        configure_guest(root)
        kernel_version = export_boot_files(root, work)
        steps("boot loader (GRUB core image)")
        core = make_grub_core(root, kernel_version, work, log)
        strip_caches(root)
        steps(f"root file system (mkfs.ext4 -d, label {ROOT_LABEL}) and MBR disk")
        raw = make_disk(root, core, work, log)
        steps("qcow2 system disk")
        run([require("qemu-img"), "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], 600, log)
        raw.unlink()
        record = {
            "inputs": inputs,
            "digest": image.folder.name,
            "kernel": kernel_version,
            "build_seconds": round(time.monotonic() - started, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "disk_bytes": (work / "disk.qcow2").stat().st_size,
        }
        (work / "image.json").write_text(json.dumps(record, indent=2))
        remove_tree(root)  # the chroot: tens of thousands of directories (see remove_tree)
        shutil.rmtree(work / "wheels", ignore_errors=True)
        shutil.rmtree(image.folder, ignore_errors=True)
        image.folder.parent.mkdir(parents=True, exist_ok=True)
        work.rename(image.folder)
    except BaseException:
        remove_tree(work / "root")  # keep build.log for the user
        raise
    if progress:
        print(f"guest image built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return image


def in_mount_namespace(cmd: list[str]) -> list[str]:
    """Mounts made by the command vanish with it, even if it is killed: nothing to clean up."""
    return [require("unshare"), "--mount", "--propagation", "private", *cmd]


def debootstrap(root: Path, log: Path) -> None:
    debs = vm_cache() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    run(
        in_mount_namespace(
            [
                require("debootstrap"),
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                f"--cache-dir={debs}",
                SUITE,
                str(root),
                MIRROR,
            ]
        ),
        1200,
        log,
        "debootstrap",
    )


def chroot(root: Path, script: str, log: Path, timeout: float = 1200) -> None:
    """Run a shell script in the chroot with a clean environment (no host pip or apt settings leak in)."""
    (root / "tmp/step.sh").write_text(script)
    inner = (
        'set -e; mount -t proc proc "$1/proc"; mount -t sysfs sys "$1/sys"; mount --rbind /dev "$1/dev"; '
        'exec chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 '
        "DEBIAN_FRONTEND=noninteractive /bin/sh -ex /tmp/step.sh"
    )
    run(in_mount_namespace(["/bin/sh", "-c", inner, "sh", str(root)]), timeout, log, "a build step in the chroot")
    (root / "tmp/step.sh").unlink()


def install_system(root: Path, log: Path) -> None:
    (root / "usr/sbin/policy-rc.d").write_text(POLICY_RC)
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\ndeb {SECURITY_MIRROR} {SUITE}-security main\n"
    )
    (root / "etc/initramfs-tools/modules").parent.mkdir(parents=True, exist_ok=True)
    (root / "etc/initramfs-tools/modules").write_text("\n".join(INITRD_MODULES) + "\n")
    (root / "etc/initramfs-tools/conf.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/initramfs-tools/conf.d/pacsbench.conf").write_text(INITRD_CONF)
    (root / "etc/hostname").write_text("pacsbench-guest\n")
    archives = root / "var/cache/apt/archives"
    link_debs(vm_cache() / "debs", archives)  # apt reuses .debs it finds there: a rebuild downloads nothing new
    # The initrd is made once, by the kernel's own hook: the later initramfs-tools trigger (a second,
    # identical 40 s run) is switched off meanwhile.
    conf = "/etc/initramfs-tools/update-initramfs.conf"
    chroot(
        root,
        "apt-get update -q\n"
        "apt-get -y -q --no-install-recommends dist-upgrade\n"
        "apt-get -y -q --no-install-recommends install initramfs-tools\n"
        f"sed -i 's/^update_initramfs=.*/update_initramfs=no/' {conf}\n"
        f"apt-get -y -q --no-install-recommends install {' '.join(KERNEL_PACKAGES + GUEST_TOOLS_PACKAGES)}\n"
        f"sed -i 's/^update_initramfs=.*/update_initramfs=yes/' {conf}\n"
        "ls /boot/initrd.img-* || update-initramfs -c -k all\n",
        log,
    )
    link_debs(archives, vm_cache() / "debs")
    (root / "usr/sbin/policy-rc.d").unlink()


def link_debs(source: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for deb in source.glob("*.deb"):
        target = destination / deb.name
        if not target.exists():
            try:
                os.link(deb, target)
            except OSError:
                shutil.copy2(deb, target)


def download_wheels(versions: dict[str, str], wheels: Path, log: Path) -> None:
    """Wheels for the guest's CPython and glibc, every distribution pinned (python_versions), nothing built here."""
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version}" for name, version in versions.items()]
    platforms = [word for tag in guest_platforms() for word in ("--platform", tag)]
    abi = f"cp{GUEST_PYTHON.replace('.', '')}"
    run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"),
            *("--python-version", GUEST_PYTHON, "--implementation", "cp", "--abi", abi, *platforms),
            *("--dest", str(wheels), *pins),
        ],
        600,
        log,
        "pip download",
    )


def install_archive(root: Path, wheels: Path, versions: dict[str, str], log: Path) -> None:
    download_wheels(versions, wheels, log)
    shutil.copytree(wheels, root / "tmp/wheels")
    pins = " ".join(f"{name}=={version}" for name, version in versions.items())
    chroot(
        root,
        f"python3 -m venv {GUEST_VENV}\n"
        f"{GUEST_VENV}/bin/pip install --quiet --no-index --find-links /tmp/wheels {pins}\n",
        log,
    )
    site = next((root / GUEST_VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
    shutil.copytree(server_package(), site / "server_under_test", ignore=shutil.ignore_patterns("__pycache__"))
    # Byte-compile now: under emulation every import saved is boot time saved.
    chroot(root, f"{GUEST_VENV}/bin/python -m compileall -q {GUEST_VENV}/lib\n", log)
    shutil.rmtree(root / "tmp/wheels")


def configure_guest(root: Path) -> None:
    (root / "etc/systemd/system/pacsbench-archive.service").write_text(ARCHIVE_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "pacsbench-archive.service").symlink_to("/etc/systemd/system/pacsbench-archive.service")
    (root / "etc/systemd/network/20-dhcp.network").write_text(DHCP_NETWORK)
    (wants / "systemd-networkd.service").unlink(missing_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    (root / "etc/fstab").write_text(FSTAB)
    (root / GUEST_DATA.lstrip("/")).mkdir(parents=True, exist_ok=True)


def export_boot_files(root: Path, work: Path) -> str:
    """Copy the kernel and initrd out (for QEMU's -kernel); return the kernel version."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise UserError(f"no kernel was installed in the guest (see {work / 'build.log'})")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[-1], work / "vmlinuz")
    shutil.copy2(root / "boot" / f"initrd.img-{version}", work / "initrd.img")
    return version


def make_grub_core(root: Path, kernel_version: str, work: Path, log: Path) -> Path:
    """A GRUB core image whose embedded script boots the kernel straight away (no grub.cfg, no menu)."""
    (root / "tmp/early.cfg").write_text(
        f"search --no-floppy --label --set=root {ROOT_LABEL}\n"
        f"linux /boot/vmlinuz-{kernel_version} {BASE_CMDLINE}\n"
        f"initrd /boot/initrd.img-{kernel_version}\n"
        "boot\n"
    )
    chroot(
        root,
        f"grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg -p /boot/grub {' '.join(GRUB_MODULES)}\n",
        log,
    )
    core = work / "core.img"
    shutil.move(root / "tmp/core.img", core)
    shutil.copy2(root / "usr/lib/grub/i386-pc/boot.img", work / "boot.img")
    (root / "tmp/early.cfg").unlink()
    return core


def strip_caches(root: Path) -> None:
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / folder).glob("*"):
            if path.is_file():
                path.unlink()
    for path in (root / "var/cache/apt").glob("*.bin"):
        path.unlink()


def make_disk(root: Path, core: Path, work: Path, log: Path) -> Path:
    """MBR + GRUB (boot sector, core image in the gap before the partition) + the ext4 partition."""
    fs = work / "root.ext4"
    # metadata_csum_seed and orphan_file are newer than bookworm's GRUB can read.
    run(
        [
            require("mkfs.ext4"),
            "-q",
            "-F",
            "-L",
            ROOT_LABEL,
            "-O",
            "^metadata_csum_seed,^orphan_file",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
            "-d",
            str(root),
            str(fs),
            str(ROOT_FS_BYTES // 1024),
        ],
        600,
        log,
        "mkfs.ext4",
    )
    raw = work / "disk.raw"
    with raw.open("wb") as disk:
        disk.truncate(PARTITION_START + ROOT_FS_BYTES)
    run(
        [require("sfdisk"), "--quiet", str(raw)],
        60,
        log,
        "sfdisk",
        input=f"label: dos\nstart={PARTITION_START // 512}, type=83, bootable\n",
    )
    boot_sector = (work / "boot.img").read_bytes()
    core_bytes = core.read_bytes()
    if len(core_bytes) > PARTITION_START - 512:
        raise UserError(f"GRUB core image too large for the boot gap: {len(core_bytes)} bytes")
    with raw.open("r+b") as disk:
        disk.write(boot_sector[:440])  # code only: keep the disk signature and partition table
        disk.seek(512)  # GRUB's boot sector loads the core from sector 1 by default
        disk.write(core_bytes)
        copy_sparse(fs, disk, PARTITION_START)
    fs.unlink()
    return raw


def copy_sparse(source: Path, disk, offset: int, block: int = 1 << 20) -> None:
    zero = bytes(block)
    with source.open("rb") as src:
        position = offset
        while chunk := src.read(block):
            if chunk != zero[: len(chunk)]:
                disk.seek(position)
                disk.write(chunk)
            position += len(chunk)
