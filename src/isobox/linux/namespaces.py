"""Namespace kinds, their clone flags and how to join or create them; a
fork that starts the child in a cgroup (clone3)."""

from __future__ import annotations

import ctypes
import os
import signal

from isobox.linux import libc

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_INTO_CGROUP = 0x200000000
SYS_CLONE3 = 435  # x86_64, as in libc

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


class _CloneArgs(ctypes.Structure):
    """struct clone_args (CLONE_ARGS_SIZE_VER2)."""

    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


def single_threaded() -> bool:
    """Whether this process has one thread (the kernel's count, not Python's)."""
    return len(os.listdir("/proc/self/task")) == 1


def fork_into_cgroup(cgroup_fd: int) -> int:
    """os.fork(), except that the child starts in the cgroup2 directory open
    (O_RDONLY) as ``cgroup_fd``: clone3 with CLONE_INTO_CGROUP (Linux 5.7).

    A process born in a cgroup costs the kernel only the read side of its
    cgroup_threadgroup_rwsem; moving one there afterwards (writing
    cgroup.procs) takes the write side, and the first writer in a while waits
    for an RCU grace period (10-25 ms on a loaded host).

    The Python side is os.fork's (PyOS_BeforeFork and AfterFork, the GIL
    held across the call); glibc's own fork handlers do not run, so the
    caller must be single-threaded (:func:`single_threaded`). Returns 0 in
    the child, the child's pid in the parent. OSError when the kernel refuses
    (ENOSYS, E2BIG or EINVAL before 5.7; EBUSY, EOPNOTSUPP for a cgroup that
    cannot hold processes...): nothing was forked then.
    """
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    api = ctypes.pythonapi
    # A PyDLL keeps the GIL across the call, as os.fork does around fork().
    clone3 = ctypes.PyDLL(None, use_errno=True).syscall
    clone3.restype = ctypes.c_long
    api.PyOS_BeforeFork()
    pid = clone3(ctypes.c_long(SYS_CLONE3), ctypes.byref(args),
                 ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return int(pid)
