"""The container's root filesystem: the engine's mounts stacked on D/bundle/rootfs."""

from __future__ import annotations

import errno

from isobox.linux import libc
from isobox.linux.mounts import MNT_DETACH, MS_BIND, MS_REC, MountOptions, bind_remount
from isobox.shim.config import RootfsMount


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
                libc.mount("overlay", self.target, "overlay", opts.flags, opts.data or None)
            else:
                libc.mount(m.source, self.target, None, MS_BIND | MS_REC)
                self._mounted += 1
                extra = opts.flags & ~(MS_BIND | MS_REC)
                if extra:  # ro, nosuid...: a bind mount takes them on a remount
                    bind_remount(self.target, extra)
                continue
            self._mounted += 1

    def unmount(self) -> None:
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
