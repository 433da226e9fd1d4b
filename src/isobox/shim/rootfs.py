"""The container's root filesystem: the engine's mounts stacked on D/bundle/rootfs.

A container removed at its end (``--rm``) gets its overlay ``volatile``: the
kernel then never syncs the upper layer's filesystem for it, and the last
unmount of a writable overlay otherwise syncs the whole host filesystem that
holds it (``syncfs``: 0.4 ms on an idle host, 2.5 ms median and up to 0.4 s
with another process writing). Such an overlay leaves
``<workdir>/work/incompat/volatile`` behind, and the kernel refuses to mount
it again while that is there, since after a crash of the host its files may
be incomplete. Whoever unmounts it cleanly (no crash since it was mounted)
removes the marker (:func:`clear_volatile`), so that a restart, ``cp`` or
``export`` can mount the layer again.
"""

from __future__ import annotations

import errno
import os

from isobox.errors import IsoboxError
from isobox.linux import libc
from isobox.linux.mounts import MNT_DETACH, MS_BIND, MS_REC, MountOptions, bind_remount
from isobox.shim.config import RootfsMount

VOLATILE = "volatile"
#: Under an overlay's workdir, what a volatile mount leaves (innermost first).
_MARKER = ("work/incompat/volatile/dirty", "work/incompat/volatile", "work/incompat")


class Rootfs:
    """Mounts on enter, unmounts (top first) on unmount; safe to unmount twice."""

    def __init__(self, target: str, mounts: list[RootfsMount]) -> None:
        self.target = target
        self.mounts = mounts
        self._mounted = 0

    def mount(self) -> None:
        for m in self.mounts:
            opts = MountOptions(m.options)
            if m.type == "overlay":
                try:
                    libc.mount("overlay", self.target, "overlay", opts.flags, opts.data or None)
                except OSError as exc:
                    if exc.errno == errno.EINVAL and has_volatile_marker(m.options):
                        raise IsoboxError(
                            "the container's writable layer was mounted volatile (--rm) and "
                            "not unmounted cleanly before the host went down: its files may "
                            "be incomplete; remove the container") from None
                    raise
            else:
                libc.mount(m.source, self.target, None, MS_BIND | MS_REC)
                self._mounted += 1
                extra = opts.flags & ~(MS_BIND | MS_REC)
                if extra:  # ro, nosuid...: a bind mount takes them on a remount
                    bind_remount(self.target, extra)
                continue
            self._mounted += 1

    def unmount(self) -> None:
        if not self._mounted:
            return
        while self._mounted:
            try:
                libc.umount2(self.target)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # nothing mounted there any more
                    self._mounted = 0
                    return
                if exc.errno != errno.EBUSY:
                    raise
                libc.umount2(self.target, MNT_DETACH)
            self._mounted -= 1
        for m in self.mounts:
            clear_volatile(m.options)


def _workdir(options: list[str]) -> str | None:
    if VOLATILE not in options:
        return None
    for opt in options:
        if opt.startswith("workdir="):
            return opt[len("workdir="):]
    return None


def has_volatile_marker(options: list[str]) -> bool:
    workdir = _workdir(options)
    return workdir is not None and os.path.isdir(os.path.join(workdir, _MARKER[-1]))


def clear_volatile(options: list[str]) -> None:
    """After a clean unmount of a volatile overlay (its files are all in the
    host's page cache, written back in time like any other): remove the
    marker that would refuse the next mount. No-op for other mounts."""
    workdir = _workdir(options)
    if workdir is None:
        return
    for rel in _MARKER:
        path = os.path.join(workdir, rel)
        try:
            if rel == _MARKER[0]:
                os.unlink(path)  # "dirty" is a file (6.x kernels)
            else:
                os.rmdir(path)
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            try:
                os.rmdir(path)
            except OSError:
                return
        except OSError:
            return  # not the layout this kernel was known to make: leave it
