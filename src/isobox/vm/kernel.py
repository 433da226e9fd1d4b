"""The guest kernel: Debian's ``linux-image-*`` package fetched with apt and
unpacked under ``<state>/vm/kernels/<version>/`` (``vmlinuz`` and
``modules/``), or a kernel given on the command line.

A kernel given with ``--kernel`` and no modules directory must have the
drivers the guest needs built in (virtio-pci, virtio-console, virtio-blk,
virtio-net, erofs, ext4, overlay, 9p): the initramfs then loads nothing.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass

from isobox.errors import InvalidArgument, NotFound, Unavailable
from isobox.linux.files import atomic_write
from isobox.vm import pvh

META_PACKAGE = "linux-image-amd64"
_DOWNLOAD_TIMEOUT = 900.0
_UNPACK_TIMEOUT = 300.0


@dataclass(frozen=True)
class GuestKernel:
    version: str
    kernel: str  #: the vmlinuz (bzImage) or an uncompressed PVH vmlinux
    modules_dir: str  #: ``.../lib/modules/<version>``; "" when the drivers are built in
    initrd_override: str | None = None


def vm_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "vm")


def kernels_dir(state_dir: str) -> str:
    return os.path.join(vm_dir(state_dir), "kernels")


def installed(state_dir: str, version: str) -> GuestKernel:
    """An unpacked kernel, booted through its PVH vmlinux when setup made one."""
    base = os.path.join(kernels_dir(state_dir), version)
    image = os.path.join(base, "vmlinux")
    if not os.path.exists(image):
        image = os.path.join(base, "vmlinuz")
    return GuestKernel(version, image, os.path.join(base, "modules"))


def setup(state_dir: str, package: str | None = None, deb: str | None = None) -> GuestKernel:
    """Fetch and unpack a kernel package (or a local ``.deb``) and make it the
    current guest kernel. Idempotent: an installed version is not fetched again."""
    os.makedirs(kernels_dir(state_dir), exist_ok=True)
    name = (package or default_package()) if deb is None else _deb_package(deb)
    guess = _version_from_package(name)
    if guess and os.path.isdir(os.path.join(kernels_dir(state_dir), guess)):
        return _make_current(state_dir, guess)
    with tempfile.TemporaryDirectory(prefix=".setup-", dir=kernels_dir(state_dir)) as tmp:
        if deb is None:
            deb = _download(name, tmp)
        version = _install_from_deb(deb, tmp, kernels_dir(state_dir))
    return _make_current(state_dir, version)


def find(state_dir: str, kernel: str | None = None, initrd: str | None = None,
         modules: str | None = None) -> GuestKernel:
    """The kernel to boot: the explicit ``kernel`` path (with ``modules``, a
    ``lib/modules/<version>`` directory, or none) or the one set up."""
    if initrd is not None and not os.path.isfile(initrd):
        raise NotFound(f"initrd {initrd} does not exist")
    if kernel is not None:
        if not os.path.isfile(kernel):
            raise NotFound(f"guest kernel {kernel} does not exist")
        if modules and not os.path.isdir(os.path.join(modules, "kernel")):
            raise NotFound(f"{modules} is not a kernel modules directory (no kernel/ inside)")
        version = bzimage_version(kernel) or os.path.basename(os.path.normpath(modules or kernel))
        return GuestKernel(version, os.path.abspath(kernel),
                           os.path.abspath(modules) if modules else "", initrd)
    try:
        with open(os.path.join(vm_dir(state_dir), "kernel.json"), "rb") as f:
            version = json.loads(f.read())["version"]
    except FileNotFoundError:
        raise NotFound("no guest kernel for VM isolation: run 'isobox vm setup' (or set vm.kernel "
                       "in the settings file)") from None
    found = installed(state_dir, version)
    if not os.path.isfile(found.kernel):
        raise NotFound(f"guest kernel {version} is recorded but missing: run 'isobox vm setup'")
    return GuestKernel(found.version, found.kernel, found.modules_dir, initrd)


def default_package() -> str:
    """The versioned package that ``linux-image-amd64`` currently depends on."""
    try:
        out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise Unavailable("apt-cache not found: pass a kernel package file or --kernel") from None
    for line in out.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Depends" and value.startswith("linux-image-"):
            return value.strip("<>")
    raise Unavailable(f"apt does not know {META_PACKAGE}: run apt-get update, or pass --kernel")


def bzimage_version(path: str) -> str | None:
    """The release (``6.1.0-56-amd64``) from a bzImage's setup header."""
    with open(path, "rb") as f:
        head = f.read(0x10000)
    if head[0x202:0x206] != b"HdrS":
        return None
    pointer = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    text = head[pointer:pointer + 256].split(b"\0")[0].decode(errors="replace")
    return text.split(" ")[0] or None


def _version_from_package(package: str) -> str | None:
    match = re.fullmatch(r"linux-image-(\d[^ ]*?)(-unsigned)?", package)
    return match.group(1) if match else None


def _deb_package(deb: str) -> str:
    if not os.path.isfile(deb):
        raise NotFound(f"kernel package {deb} does not exist")
    res = subprocess.run(["dpkg-deb", "--field", deb, "Package"], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise InvalidArgument(f"{deb} is not a Debian package: {res.stderr.strip()}")
    return res.stdout.strip()


def _download(package: str, tmp: str) -> str:
    try:
        res = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp,
                             capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise Unavailable("apt-get not found: pass a kernel package file or --kernel") from None
    debs = [n for n in os.listdir(tmp) if n.endswith(".deb")]
    if res.returncode != 0 or len(debs) != 1:
        detail = (res.stderr.strip().splitlines() or ["no .deb written"])[-1]
        raise Unavailable(f"apt-get download {package} failed: {detail}")
    return os.path.join(tmp, debs[0])


def _install_from_deb(deb: str, tmp: str, dest_parent: str) -> str:
    """Unpack into ``tmp`` and rename the kernel into place; a concurrent
    setup of the same version that renamed first wins, harmlessly."""
    unpacked = os.path.join(tmp, "root")
    res = subprocess.run(["dpkg-deb", "-x", deb, unpacked], capture_output=True, text=True,
                         timeout=_UNPACK_TIMEOUT, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise InvalidArgument(f"dpkg-deb -x {deb} failed: {res.stderr.strip()}")
    releases = os.listdir(os.path.join(unpacked, "lib", "modules")) \
        if os.path.isdir(os.path.join(unpacked, "lib", "modules")) else []
    if len(releases) != 1 or not os.path.isfile(
            os.path.join(unpacked, "boot", f"vmlinuz-{releases[0]}")):
        raise InvalidArgument(f"{deb} is not a kernel image package (no vmlinuz and modules)")
    version = releases[0]
    staged = os.path.join(tmp, "kernel")
    os.mkdir(staged)
    os.rename(os.path.join(unpacked, "boot", f"vmlinuz-{version}"),
              os.path.join(staged, "vmlinuz"))
    _write_pvh_image(staged)
    config = os.path.join(unpacked, "boot", f"config-{version}")
    if os.path.exists(config):
        os.rename(config, os.path.join(staged, "config"))
    os.rename(os.path.join(unpacked, "lib", "modules", version), os.path.join(staged, "modules"))
    try:
        os.rename(staged, os.path.join(dest_parent, version))
    except OSError:
        if not os.path.isdir(os.path.join(dest_parent, version)):
            raise
    return version


def _write_pvh_image(staged: str) -> None:
    """``vmlinux`` next to ``vmlinuz`` when the kernel can boot through PVH."""
    with open(os.path.join(staged, "vmlinuz"), "rb") as f:
        vmlinux = pvh.extract_vmlinux(f.read())
    if vmlinux is not None and pvh.has_pvh_entry(vmlinux):
        with open(os.path.join(staged, "vmlinux"), "wb") as f:
            f.write(vmlinux)


def _make_current(state_dir: str, version: str) -> GuestKernel:
    atomic_write(os.path.join(vm_dir(state_dir), "kernel.json"),
                 json.dumps({"version": version}).encode())
    return installed(state_dir, version)
