"""Mount flags, option parsing, and mounts that land exactly where resolved."""

from __future__ import annotations

import errno
import os
import stat

from isobox.linux import libc

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000
MNT_DETACH = 0x2

# option -> (clear?, flag)
FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, MS_RDONLY), "rw": (True, MS_RDONLY),
    "nosuid": (False, MS_NOSUID), "suid": (True, MS_NOSUID),
    "nodev": (False, MS_NODEV), "dev": (True, MS_NODEV),
    "noexec": (False, MS_NOEXEC), "exec": (True, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS), "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC), "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK), "nomand": (True, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME), "atime": (True, MS_NOATIME),
    "nodiratime": (False, MS_NODIRATIME), "diratime": (True, MS_NODIRATIME),
    "relatime": (False, MS_RELATIME), "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME), "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, MS_LAZYTIME), "nolazytime": (True, MS_LAZYTIME),
    "nosymfollow": (False, MS_NOSYMFOLLOW), "symfollow": (True, MS_NOSYMFOLLOW),
    "bind": (False, MS_BIND), "rbind": (False, MS_BIND | MS_REC),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED, "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}
# Options that runtimes accept and that are not kernel flags or fs data.
IGNORED = {"tmpcopyup", "idmap", "ridmap", "recursive", "defaults"}

# statvfs flags that a remount inside a user namespace must keep (locked).
_LOCKED = {
    os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
    os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME,
    os.ST_RELATIME: MS_RELATIME, os.ST_RDONLY: MS_RDONLY,
}


class MountOptions:
    """A mount's options split into flags, propagation flags and fs data."""

    __slots__ = ("data", "flags", "propagation")

    def __init__(self, options: list[str] | None) -> None:
        self.flags = 0
        self.propagation: list[int] = []
        data: list[str] = []
        for opt in options or ():
            if opt in FLAGS:
                clear, bit = FLAGS[opt]
                self.flags = self.flags & ~bit if clear else self.flags | bit
            elif opt in PROPAGATION:
                self.propagation.append(PROPAGATION[opt])
            elif opt in IGNORED:
                continue
            else:
                data.append(opt)
        self.data = ",".join(data)

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)


def fd_path(fd: int) -> str:
    """A path that names exactly the inode behind an O_PATH fd."""
    return f"/proc/self/fd/{fd}"


def locked_flags(path: str) -> int:
    st = os.statvfs(path)
    flags = 0
    for st_flag, ms_flag in _LOCKED.items():
        if st.f_flag & st_flag:
            flags |= ms_flag
    return flags


def bind_remount(path: str, flags: int, recursive: bool = False) -> None:
    """Change a bind mount's flags, keeping the ones the kernel locks."""
    keep = locked_flags(path) & ~(MS_RDONLY if not flags & MS_RDONLY else 0)
    extra = MS_REC if recursive else 0
    libc.mount(None, path, None, MS_BIND | MS_REMOUNT | flags | keep | extra)


def resolve_in_root(root_fd: int, path: str) -> int:
    """O_PATH fd of path inside root; symlinks cannot climb out of root."""
    return libc.openat2(root_fd, path, os.O_PATH, resolve=libc.RESOLVE_IN_ROOT)


def mkdir_all_in_root(root_fd: int, path: str, *, file: bool = False,
                      mode: int = 0o755) -> int:
    """Create path (and parents) inside root without following any symlink
    out of it; return an O_PATH fd of the result."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    parent = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            prefix = "/".join(parts[: i + 1])
            try:
                fd = resolve_in_root(root_fd, prefix)
            except FileNotFoundError:
                if name == "..":
                    raise
                try:
                    if last and file:
                        os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
                                         | os.O_NOFOLLOW, 0o644, dir_fd=parent))
                    else:
                        os.mkdir(name, mode, dir_fd=parent)
                except FileExistsError:
                    pass
                try:
                    fd = resolve_in_root(root_fd, prefix)
                except FileNotFoundError:
                    raise OSError(errno.ENOENT, "dangling symlink in mount destination",
                                  path) from None
            if not last and not stat.S_ISDIR(os.fstat(fd).st_mode):
                os.close(fd)
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", prefix)
            os.close(parent)
            parent = fd
        return parent
    except BaseException:
        os.close(parent)
        raise
