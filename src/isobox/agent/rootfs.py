"""Leaving the initramfs's rootfs.

The kernel's first mount (rootfs, where an initramfs is unpacked) can never
be pivot_root'ed away: while it is the agent's root, the runtime's
pivot_root into a container's root fails with EINVAL. What switch_root
does, minus the copy, fixes it: a recursive bind of / is moved onto / and
chrooted into, so the root becomes an ordinary mount (with a parent) and
every process started after that inherits it. The files are the same; the
mounts the init script made (/proc, /sys, /dev, /run...) come along.
"""

from __future__ import annotations

import os

from isobox.linux.proc import mountinfo

STAGING = "/.isobox-root"


def root_is_rootfs(table: str = "/proc/self/mountinfo") -> bool:
    """Whether / is the mount namespace's first mount: it has no parent (the
    kernel shows its own id as its parent's), so pivot_root cannot leave it."""
    roots = [m for m in mountinfo(table) if m.mountpoint == "/"]
    return bool(roots) and roots[-1].mount_id == roots[-1].parent_id


def leave_rootfs() -> None:
    from isobox.linux import libc
    from isobox.linux.mounts import MS_BIND, MS_MOVE, MS_REC

    os.makedirs(STAGING, 0o700, exist_ok=True)
    libc.mount("/", STAGING, None, MS_BIND | MS_REC)
    os.chdir(STAGING)
    libc.mount(STAGING, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    os.rmdir(STAGING)  # in the new root it is an empty directory again
