"""The container's root filesystem in the guest: the image's layers as
read-only disks, a writable upper disk (or a tmpfs), the overlay of them,
and the host's folders as 9p shares.

Disks are found by their serial in sysfs (virtio-blk's, or a hotplugged
SCSI disk's VPD page 0x80): the guest has no udev to name them. A mount plan is computed first (pure data), then applied;
if a step fails, what was mounted is unmounted again, so the host may retry.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from isobox.agent.log import log
from isobox.errors import InvalidArgument, NotFound
from isobox.taskapi.protocol import SERIAL_MAX

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.agent.paths import Paths
    from isobox.agent.requests import StorageRequest

MS_RDONLY = 1
MNT_DETACH = 2
SYS_SYNCFS = 306  # x86_64; glibc has a wrapper, Python does not
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144"
MOUNT_DATA_MAX = 4095  # the kernel reads mount options from one page
DISK_WAIT = 10.0  # seconds a disk may take to appear (probing is asynchronous)


class Mount(SimpleNamespace):
    source: str
    target: str
    fstype: str
    flags: int
    data: str
    subdirs: tuple[str, ...]  # made inside once mounted, when absent


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "",
          subdirs: tuple[str, ...] = ()) -> Mount:
    return Mount(source=source, target=target, fstype=fstype, flags=flags, data=data,
                 subdirs=subdirs)


def find_disk(serial: str, sys_root: str = "/sys", dev_root: str = "/dev") -> str | None:
    """/dev/vdX of the virtio disk with this serial (the first SERIAL_MAX
    bytes of it: all the device keeps), or /dev/sdX of the SCSI disk (one
    hotplugged into a VM restored from a template) whose VPD page 0x80 holds it."""
    want = serial.encode()[:SERIAL_MAX]
    block = os.path.join(sys_root, "block")
    try:
        names = sorted(os.listdir(block))
    except FileNotFoundError:
        return None
    for name in names:
        if name.startswith("vd"):
            found = _read(os.path.join(block, name, "serial"))
        elif name.startswith("sd"):
            page = _read(os.path.join(block, name, "device", "vpd_pg80"))
            found = page[4:] if page is not None else None  # after the 4-byte page header
        else:
            continue
        if found is not None and found.rstrip(b"\n\0 ") == want:
            return os.path.join(dev_root, name)
    return None


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def wait_for_disk(serial: str, sys_root: str = "/sys", dev_root: str = "/dev",
                  timeout: float | None = None) -> str:
    deadline = time.monotonic() + (DISK_WAIT if timeout is None else timeout)
    while True:
        device = find_disk(serial, sys_root, dev_root)
        if device is not None:
            return device
        if time.monotonic() > deadline:
            raise NotFound(f"no disk with serial {serial!r}")
        time.sleep(0.02)


def overlay_options(lowers: list[str], upper: str, work: str) -> str:
    """Overlay's options; ``lowers`` bottom to top (overlay lists the top first)."""
    for path in (*lowers, upper, work):
        if ":" in path or "," in path:
            raise InvalidArgument(f"overlay cannot use a path with ':' or ',': {path}")
    data = f"lowerdir={':'.join(reversed(lowers))},upperdir={upper},workdir={work}"
    if len(data) > MOUNT_DATA_MAX:
        raise InvalidArgument(f"too many layers ({len(lowers)}) for one overlay mount")
    return data


def plan(req: StorageRequest, paths: Paths, devices: dict[str, str]) -> list[Mount]:
    """Every mount, in order; ``devices`` maps each serial to its device."""
    mounts = [mount(devices[layer.serial], paths.layer(i), layer.fstype, MS_RDONLY)
              for i, layer in enumerate(req.layers)]
    lowers = [m.target for m in mounts]
    if not lowers:  # overlay needs a lower layer: an empty one
        empty = os.path.join(paths.layers, "empty")
        mounts.append(mount("tmpfs", empty, "tmpfs", MS_RDONLY, "mode=0755"))
        lowers = [empty]
    subdirs = ("diff", "work")  # the upper disk outlives a run of the container: reused
    if req.upper is not None:
        mounts.append(mount(devices[req.upper.serial], paths.upper, req.upper.fstype,
                            subdirs=subdirs))
    else:
        mounts.append(mount("tmpfs", paths.upper, "tmpfs", data="mode=0755", subdirs=subdirs))
    mounts.append(mount("overlay", paths.rootfs, "overlay", data=overlay_options(
        lowers, os.path.join(paths.upper, "diff"), os.path.join(paths.upper, "work"))))
    mounts += [mount(share.tag, paths.share(share.tag), "9p",
                     MS_RDONLY if share.readonly else 0, NINEP_OPTIONS)
               for share in req.shares]
    return mounts


def apply(mounts: list[Mount]) -> list[str]:
    """Mount them all, or none: the targets mounted, in order."""
    from isobox.linux import libc

    done: list[str] = []
    try:
        for m in mounts:
            os.makedirs(m.target, 0o755, exist_ok=True)
            libc.mount(m.source, m.target, m.fstype, m.flags, m.data)
            done.append(m.target)
            for sub in m.subdirs:
                os.makedirs(os.path.join(m.target, sub), 0o755, exist_ok=True)
    except BaseException:
        unmount(done)
        raise
    return done


def unmount(targets: list[str]) -> None:
    """Unmount in reverse order; a busy one is detached."""
    from isobox.linux import libc

    for target in reversed(targets):
        try:
            libc.umount2(target)
        except OSError:
            try:
                libc.umount2(target, MNT_DETACH)
            except OSError as exc:
                log(f"cannot unmount {target}: {exc}")


def syncfs(path: str) -> None:
    from isobox.linux import libc

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        libc.syscall(SYS_SYNCFS, fd, what="syncfs")
    finally:
        os.close(fd)


class Storage:
    """What ``storage`` mounted this boot."""

    def __init__(self, paths: Paths, sys_root: str = "/sys", dev_root: str = "/dev") -> None:
        self.paths = paths
        self.sys_root = sys_root
        self.dev_root = dev_root
        self.mounted: list[str] = []
        self.upper_disk = False

    def setup(self, req: StorageRequest) -> str:
        if self.mounted:
            return self.paths.rootfs  # once per boot
        disks = [*req.layers, *([req.upper] if req.upper is not None else [])]
        devices = {d.serial: wait_for_disk(d.serial, self.sys_root, self.dev_root)
                   for d in disks}
        self.mounted = apply(plan(req, self.paths, devices))
        self.upper_disk = req.upper is not None
        return self.paths.rootfs

    def sync(self) -> None:
        if self.upper_disk:
            syncfs(self.paths.upper)
        else:
            os.sync()

    def teardown(self) -> None:
        unmount(self.mounted)
        self.mounted = []
        self.upper_disk = False
