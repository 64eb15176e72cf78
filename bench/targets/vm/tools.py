"""Host tools the targets call (QEMU, image building, installed archives), found up front.

They run through bench.common.processes.run (a time limit; failures become one-line errors).
"""

from __future__ import annotations

import os
import shutil

from bench.common.errors import UserError

DEBIAN_PACKAGE = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "unshare": "util-linux",
    "ip": "iproute2",
    "Orthanc": "orthanc",
    "dcmqrscp": "dcmtk",
}


def require(tool: str) -> str:
    """The tool's full path, or a UserError naming the Debian package that has it."""
    # sbin is not on every user's PATH (debootstrap, mkfs.ext4 live there).
    path = shutil.which(tool) or shutil.which(tool, path="/usr/local/sbin:/usr/sbin:/sbin")
    if not path:
        package = DEBIAN_PACKAGE.get(tool, tool)
        raise UserError(f"{tool} not found: install it (Debian: apt-get install {package})")
    return path


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise UserError(f"{what} needs root (debootstrap, chroot, network namespaces)")
