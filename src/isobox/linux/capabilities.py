"""Linux capabilities: names, the five sets, and how to set them."""

from __future__ import annotations

import ctypes
import os

from isobox.linux import libc

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
NUMBERS = {name: i for i, name in enumerate(NAMES)}

# Docker's default set for containers.
DOCKER_DEFAULT = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
_VERSION_3 = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def parse(names: list[str] | None, last_cap: int) -> int:
    """Names to a bit mask. Unknown names are an error; caps this kernel
    lacks are dropped, as runc does."""
    mask = 0
    for name in names or ():
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        if key not in NUMBERS:
            raise ValueError(f"unknown capability {name!r}")
        number = NUMBERS[key]
        if number <= last_cap:
            mask |= 1 << number
    return mask


def names_of(mask: int) -> list[str]:
    return [name for i, name in enumerate(NAMES) if mask & (1 << i)]


def get() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of this thread."""
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    libc.syscall(libc.SYS_CAPGET, ctypes.byref(header), ctypes.byref(data), what="capget")
    def join(field: str) -> int:
        return int(getattr(data[0], field)) | (int(getattr(data[1], field)) << 32)
    return join("effective"), join("permitted"), join("inheritable")


def set_sets(effective: int, permitted: int, inheritable: int) -> None:
    header = _Header(_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    libc.syscall(libc.SYS_CAPSET, ctypes.byref(header), ctypes.byref(data), what="capset")


def _status_sets(pid: int | str = "self") -> dict[str, int]:
    """The Cap* lines of /proc/<pid>/status ({"CapPrm": mask, "CapBnd": mask...});
    one read instead of a prctl per capability."""
    fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.read(fd, 16384)
    finally:
        os.close(fd)
    out = {}
    for line in raw.split(b"\n"):
        if line.startswith(b"Cap"):
            name, _, value = line.partition(b":")
            out[name.decode()] = int(value, 16)
    return out


def permitted_and_bounding(last_cap: int) -> tuple[int, int]:
    """This process's permitted and bounding sets, from one read of /proc."""
    try:
        sets = _status_sets()
        return sets["CapPrm"], sets["CapBnd"] & ((1 << (last_cap + 1)) - 1)
    except (OSError, KeyError, ValueError):
        return get()[1], _bounding_by_prctl(last_cap)


def bounding(last_cap: int) -> int:
    try:
        return _status_sets()["CapBnd"] & ((1 << (last_cap + 1)) - 1)
    except (OSError, KeyError, ValueError):
        return _bounding_by_prctl(last_cap)


def _bounding_by_prctl(last_cap: int) -> int:
    mask = 0
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_READ, cap) == 1:
            mask |= 1 << cap
    return mask


def drop_bounding(keep: int, last_cap: int) -> None:
    """Drop every capability but ``keep`` from the bounding set. No read
    first: dropping one that is already out is a successful no-op."""
    for cap in range(last_cap + 1):
        if not keep & (1 << cap):
            libc.prctl(PR_CAPBSET_DROP, cap)


def set_keepcaps(on: bool) -> None:
    libc.prctl(PR_SET_KEEPCAPS, 1 if on else 0)


def raise_ambient(mask: int, last_cap: int) -> None:
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(last_cap + 1):
        if mask & (1 << cap):
            libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
