"""The guest's initramfs, built from the host's own files and cached under
``<state>/vm/initramfs/`` by a key over every input.

Two images: the agent image (busybox, the host's Python with the modules
the agent imports, the guest kernel's drivers, an ``/init`` that execs the
agent) and the probe image (busybox and the virtio-serial drivers only),
which boots, writes a marker to the agent port and reboots (QEMU exits):
the accelerator probe and the boot-time floor.

The archive is uncompressed: the guest would decompress it under TCG, at a
fraction of the speed at which it copies."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from isobox.vm import guestpython, initscript, sharedlibs
from isobox.vm.cpio import CpioWriter
from isobox.vm.imagetree import ImageTree
from isobox.vm.initscript import VIRTIO_9P, VIRTIO_BLOCK, VIRTIO_CONSOLE, VIRTIO_NET, VIRTIO_SCSI
from isobox.vm.kernel import GuestKernel, vm_dir
from isobox.vm.modules import (
    KernelModule,
    ModuleTree,
    read_module,
    signatures_enforced,
    strip_signature,
)

#: The agent's command line: pid 1 after /init's setup.
AGENT_ARGV: tuple[str, ...] = ("/usr/bin/python3", "-I", "-m", "isobox.agent",
                               "--port-name", initscript.AGENT_PORT)
#: Modules that must import in the guest (their imports are followed).
AGENT_ROOTS: tuple[str, ...] = ("isobox.agent",)
#: Drivers the agent image loads (dependencies added), by the virtio device
#: type that needs them ("" = always): each group costs boot time under TCG
#: (ext4 alone about 0.2 s), so a VM without NICs or shares skips theirs.
GUEST_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("virtio_pci",)),
    (VIRTIO_CONSOLE, ("virtio_console",)),
    (VIRTIO_BLOCK, ("virtio_blk", "erofs", "overlay")),
    (VIRTIO_SCSI, ("virtio_scsi", "sd_mod", "erofs", "overlay")),  # a template's hotplug bus
    (initscript.CMDLINE_FLAG + initscript.WRITABLE_DISK_FLAG, ("ext4",)),
    (VIRTIO_NET, ("virtio_net",)),
    (VIRTIO_9P, ("9pnet_virtio", "9p")),
)
PROBE_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("", ("virtio_pci",)), (VIRTIO_CONSOLE, ("virtio_console",)))
#: Libraries the agent loads with dlopen (ctypes), so DT_NEEDED never names them.
DLOPEN_LIBS = ("libseccomp.so.2", "libgcc_s.so.1")
BUSYBOX = "/bin/busybox"
_FORMAT = 3  #: bump when the image layout changes
_STALE_AFTER = 600.0  #: seconds before an image no key names is deleted


def ensure(state_dir: str, kernel: GuestKernel) -> str:
    """The agent initramfs for ``kernel`` (or the kernel's initrd override)."""
    if kernel.initrd_override:
        return kernel.initrd_override
    return ensure_agent(state_dir, kernel, AGENT_ARGV, AGENT_ROOTS)


def ensure_agent(state_dir: str, kernel: GuestKernel, argv: Sequence[str],
                 roots: Sequence[str]) -> str:
    """An agent-style image with another program as pid 1 (tests use it)."""
    interpreter = os.path.realpath(argv[0])
    key = _key("agent", kernel, GUEST_MODULES, {
        "argv": list(argv), "roots": list(roots), "interpreter": _stat(interpreter),
        "stdlib": [_stat(guestpython.GUEST_LIB), _stat(_lib_dynload())],
        "dlopen": list(DLOPEN_LIBS), "extra": list(guestpython.EXTRA_MODULES)})

    def build(out: BinaryIO) -> None:
        groups = _module_groups(kernel, GUEST_MODULES)
        init = initscript.agent_init(_names(groups), argv)
        _write_agent(out, _all_modules(groups), init, argv[0], roots, interpreter)

    return _cached(state_dir, f"agent-{key}.cpio", build)


def ensure_probe(state_dir: str, kernel: GuestKernel) -> str:
    def build(out: BinaryIO) -> None:
        groups = _module_groups(kernel, PROBE_MODULES)
        _write_probe(out, _all_modules(groups), initscript.probe_init(_names(groups)))

    return _cached(state_dir, f"probe-{_key('probe', kernel, PROBE_MODULES, {})}.cpio", build)


Groups = list[tuple[str, list[KernelModule]]]


def _module_groups(kernel: GuestKernel,
                   wanted: Sequence[tuple[str, Sequence[str]]]) -> Groups:
    """Each group in load order, its dependencies included but for those of
    the unconditional groups (loaded first)."""
    if not kernel.modules_dir:
        return []  # a kernel with the drivers built in
    tree = ModuleTree(kernel.modules_dir)
    always: list[str] = []
    groups: Groups = []
    for device_type, names in wanted:
        order = tree.load_order(names, loaded=always)
        if not device_type:
            always += [m.name for m in order]
        groups.append((device_type, order))
    return groups


def _names(groups: Groups) -> list[tuple[str, list[str]]]:
    return [(device_type, [m.name for m in order]) for device_type, order in groups]


def _all_modules(groups: Groups) -> list[KernelModule]:
    unique = {m.name: m for _, order in groups for m in order}
    return list(unique.values())


def _stat(path: str) -> list[object]:
    st = os.stat(path)
    return [path, st.st_size, st.st_mtime_ns]


def _lib_dynload() -> str:
    return os.path.join(guestpython.GUEST_LIB, "lib-dynload")


def _key(kind: str, kernel: GuestKernel, wanted: object, inputs: dict[str, object]) -> str:
    """Every input, files by size and mtime, cheap enough for every VM start:
    the isobox sources (which hold the init scripts and the image layout),
    busybox, and the kernel's modules tree taken as fixed for its version
    (resolving module dependencies is left to the build)."""
    modules = [_stat(kernel.modules_dir), _stat(os.path.join(kernel.modules_dir, "kernel"))] \
        if kernel.modules_dir else []
    doc = {"format": _FORMAT, "kind": kind, "kernel": kernel.version, "modules_dir": modules,
           "wanted": wanted, "busybox": _stat(BUSYBOX),
           "sources": guestpython.source_signature(), **inputs}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def _cached(state_dir: str, name: str, build: Callable[[BinaryIO], None]) -> str:
    directory = os.path.join(vm_dir(state_dir), "initramfs")
    path = os.path.join(directory, name)
    if os.path.exists(path):
        return path
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            build(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)  # a racing build of the same key wrote the same bytes
    except BaseException:
        os.unlink(tmp)
        raise
    _remove_stale(directory, name)
    return path


def _remove_stale(directory: str, current: str) -> None:
    """Drop older images of the same kind; one booting now was read at QEMU's start."""
    kind = current.split("-", 1)[0]
    now = time.time()
    for entry in os.listdir(directory):
        if entry == current or not entry.startswith(f"{kind}-"):
            continue
        try:
            if now - os.stat(os.path.join(directory, entry)).st_mtime > _STALE_AFTER:
                os.unlink(os.path.join(directory, entry))
        except FileNotFoundError:
            pass


def _base(tree: ImageTree) -> None:
    for path in ("/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/etc", initscript.REROOT_DIR):
        tree.directory(path)
    tree.char_device("/dev/console", 5, 1)
    tree.host_file(BUSYBOX)
    tree.symlink("/bin/sh", "busybox")


def _modules(tree: ImageTree, modules: list[KernelModule]) -> None:
    for module in modules:
        data = read_module(module.path)
        if _may_strip(module):
            data = strip_signature(data)
        tree.file(f"{initscript.MODULES_DIR}/{module.name}.ko", data)


def _may_strip(module: KernelModule) -> bool:
    """Signatures go where the kernel is known not to enforce them: a setup
    kernel keeps its config two levels above ``kernel/``."""
    modules_dir = module.path[:module.path.rindex(f"{os.sep}kernel{os.sep}")]
    return signatures_enforced(os.path.join(os.path.dirname(modules_dir), "config")) is False


def _write_probe(out: BinaryIO, modules: list[KernelModule], init: str) -> None:
    writer = CpioWriter(out)
    tree = ImageTree(writer)
    _base(tree)
    _modules(tree, modules)
    tree.file("/init", init.encode(), 0o755)
    writer.finish()


def _write_agent(out: BinaryIO, modules: list[KernelModule], init: str, program: str,
                 roots: Sequence[str], interpreter: str) -> None:
    with tempfile.TemporaryDirectory(prefix="isobox-pyc-") as workdir:
        files = guestpython.scan(interpreter, roots, workdir)
        extensions = [f.host for f in files if f.host.endswith(".so")]
        libs = sharedlibs.closure([interpreter, *extensions], DLOPEN_LIBS)
        writer = CpioWriter(out)
        tree = ImageTree(writer)
        _base(tree)
        tree.host_file(program)
        for lib in libs:
            tree.host_file(lib)
        # Python looks for lib-dynload to find its platform libraries.
        tree.directory(_lib_dynload())
        for f in files:
            tree.host_file(f.host, f.guest)
            if f.pyc:
                tree.host_file(f.pyc, guestpython.pyc_path(f.guest))
        for host, guest in guestpython.package_data():
            tree.host_file(host, guest)
        _modules(tree, modules)
        tree.file("/init", init.encode(), 0o755)
        writer.finish()
