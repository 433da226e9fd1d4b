"""The one ctypes binding to libc. Every failure raises OSError with the real errno."""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any
_libc = ctypes.CDLL(None, use_errno=True)

# x86_64 syscall numbers for calls glibc 2.36 has no wrapper for.
SYS_PIVOT_ROOT = 155
SYS_OPENAT2 = 437
SYS_PIDFD_OPEN = 434
SYS_PIDFD_SEND_SIGNAL = 424
SYS_CLOSE_RANGE = 436
SYS_CAPGET = 125
SYS_CAPSET = 126


def _check(result: int, what: str, path: str | None = None) -> int:
    if result == -1:
        err = ctypes.get_errno()
        if path is not None:
            raise OSError(err, f"{what}: {os.strerror(err)}", path)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(_libc, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_unshare = _fn("unshare", ctypes.c_int, ctypes.c_int)
_setns = _fn("setns", ctypes.c_int, ctypes.c_int, ctypes.c_int)
_mount = _fn(
    "mount", ctypes.c_int,
    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
)
_umount2 = _fn("umount2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_prctl = _fn(
    "prctl", ctypes.c_int,
    ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
)
_sethostname = _fn("sethostname", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_setdomainname = _fn("setdomainname", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
_mknod = _fn("mknod", ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_ulong)
_chroot = _fn("chroot", ctypes.c_int, ctypes.c_char_p)
_madvise = _fn("madvise", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def syscall(number: int, *args: Any, what: str = "syscall") -> int:
    return _check(_syscall(ctypes.c_long(number), *args), what)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(
        _mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source or fstype} on {target}",
    )


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(target.encode(), flags), f"umount {target}")


def madvise(address: int, length: int, advice: int) -> None:
    _check(_madvise(address, length, advice), "madvise")


def pivot_root(new_root: str, put_old: str) -> None:
    syscall(SYS_PIVOT_ROOT, new_root.encode(), put_old.encode(), what="pivot_root")


def chroot(path: str) -> None:
    _check(_chroot(path.encode()), "chroot", path)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_setdomainname(raw, len(raw)), "setdomainname")


def mknod(path: str, mode: int, dev: int) -> None:
    _check(_mknod(path.encode(), mode, dev), "mknod", path)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    res = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), path.encode(),
                   ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(res, "openat2", path)


def pidfd_open(pid: int) -> int:
    return syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0), what="pidfd_open")


CLOSE_RANGE_CLOEXEC = 4


def mark_cloexec_from(first: int) -> None:
    """Set FD_CLOEXEC on every fd >= first, so none survives an execve."""
    res = _syscall(ctypes.c_long(SYS_CLOSE_RANGE), ctypes.c_uint(first),
                   ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC))
    if res == -1:
        for fd in os.listdir("/proc/self/fd"):
            if int(fd) >= first:
                try:
                    os.set_inheritable(int(fd), False)
                except OSError:
                    pass


def load_library(soname: str) -> ctypes.CDLL:
    """Load a shared library by soname (``libseccomp.so.2``), errno kept.

    By soname rather than ``ctypes.util.find_library``, which forks ldconfig."""
    try:
        return ctypes.CDLL(soname, use_errno=True)
    except OSError as exc:
        raise OSError(2, f"{soname} not found: {exc}") from exc
