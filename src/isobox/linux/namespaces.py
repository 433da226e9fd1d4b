"""Namespace kinds, their clone flags and how to join or create them."""

from __future__ import annotations

import os

from isobox.linux import libc

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# OCI namespace type -> (clone flag, name under /proc/<pid>/ns/)
KINDS: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "network": (CLONE_NEWNET, "net"),
    "pid": (CLONE_NEWPID, "pid"),
    "mount": (CLONE_NEWNS, "mnt"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}

# Join order: user first (it owns the others), mount late (paths under
# /proc are opened before any setns, so the order only matters for
# permissions), as runc's nsexec does.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def flag(kind: str) -> int:
    return KINDS[kind][0]


def proc_name(kind: str) -> str:
    return KINDS[kind][1]


def ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{proc_name(kind)}").st_ino


def unshare(flags: int) -> None:
    libc.unshare(flags)


def join(fd: int, kind: str) -> None:
    libc.setns(fd, flag(kind))


def open_ns(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
