"""What a per-root, detached, warm fork server needs: one owner (a flock),
a private socket, a way to know it is out of date, and a way to step aside.

Two servers use it: the shim launcher (:mod:`isobox.shim.zygote`) and the
CLI's command server (:mod:`isobox.engine.resident`). Each lives beside its
socket ``NAME.sock`` with ``NAME.lock`` (held for its life), ``NAME.pid`` and
``NAME.log``."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import os
import sys

# No array module (it imports collections): fds are packed by hand, as the
# CLI's front end imports this module before anything else.
FD_SIZE = 4

LOCK_WAIT = 5.0  # a stale predecessor is on its way out: wait this long for its lock


def base_name(path: str) -> str:
    """``NAME`` of ``NAME.sock``: the prefix of the server's other files."""
    return path[:-5] if path.endswith(".sock") else path


def receive(conn: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """One message and the fds passed with it (SCM_RIGHTS)."""
    fds = []
    msg, ancdata, _, _ = conn.recvmsg(size, socket.CMSG_SPACE(max_fds * FD_SIZE))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            for at in range(0, len(data) - len(data) % FD_SIZE, FD_SIZE):
                fds.append(int.from_bytes(data[at:at + FD_SIZE], sys.byteorder, signed=True))
    return msg, fds


def send(conn: socket.socket, msg: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
    """One message, with ``fds`` passed along (SCM_RIGHTS) if any."""
    if not fds:
        conn.sendmsg([msg])
        return
    data = b"".join(fd.to_bytes(FD_SIZE, sys.byteorder, signed=True) for fd in fds)
    conn.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, data)])


def identity() -> tuple[str, str]:
    """(isobox's package directory, the environment and interpreter): what
    makes a server this installation's."""
    import isobox

    return (os.path.dirname(os.path.abspath(isobox.__file__)),
            f"{sys.prefix}:{os.path.realpath(sys.executable)}")


class Stamp:
    """What a server's code was when it started: (mtime, size) of every
    isobox module it imported, the mtime of each isobox package directory (a
    file added or replaced by rename changes it), and of ``extra`` files."""

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self.files = self._files() + list(extra)
        self.seen = self._read(self.files)

    @staticmethod
    def _files() -> list[str]:
        files = set()
        for name, module in list(sys.modules.items()):
            spec = getattr(module, "__spec__", None)
            if name == "__main__" and spec is not None:
                name = spec.name  # the server itself, run with -m
            if name == "isobox" or name.startswith("isobox."):
                path = getattr(module, "__file__", None)
                if path:
                    files.add(path)
                    files.add(os.path.dirname(path))
        return sorted(files)

    @staticmethod
    def _read(files: list[str]) -> list[tuple[int, int]]:
        out = []
        for path in files:
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((-1, -1))
        return out

    def changed(self) -> str | None:
        """The first file or directory that changed since the start, or None."""
        now = self._read(self.files)
        if now == self.seen:
            return None
        return next(f for f, a, b in zip(self.files, now, self.seen, strict=True) if a != b)


def take_lock(path: str, wait: float = LOCK_WAIT) -> int | None:
    """The flock that makes this server the root's only one; None if another
    holds it for longer than ``wait`` seconds."""
    from isobox.linux.files import flock_within

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if flock_within(fd, wait, step=0.02):
        return fd
    os.close(fd)
    return None


def bind(path: str, backlog: int = 64) -> tuple[socket.socket, int]:
    """A SOCK_SEQPACKET listener on ``path`` (mode 0600; a leftover file is
    replaced) and the socket file's inode, to tell it from a successor's."""
    from isobox.linux.unixsock import bind_private

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bind_private(listener, path)
    listener.listen(backlog)
    return listener, os.stat(path).st_ino


def ours(path: str, inode: int) -> bool:
    """Whether the socket file at ``path`` is still this server's."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def retire(path: str, inode: int) -> None:
    """Take the server's names away (no new connection can arrive); what is
    queued is still answered."""
    if ours(path, inode):
        for name in (path, base_name(path) + ".pid"):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def name_self(name: bytes) -> None:
    """Set this process's name (/proc/self/comm: what ps and top show; the
    command line stays the server's)."""
    comm = os.open("/proc/self/comm", os.O_WRONLY)
    try:
        os.write(comm, name)
    finally:
        os.close(comm)


def write_pid(path: str) -> None:
    from isobox.linux.files import atomic_write

    atomic_write(base_name(path) + ".pid", f"{os.getpid()}\n".encode(), 0o644)


#: /proc/PID/status lines that must match for two processes to hold the
#: same privileges: ids, groups, every capability set, no_new_privs, seccomp.
PRIVILEGE_KEYS = (b"Uid:", b"Gid:", b"Groups:", b"CapInh:", b"CapPrm:", b"CapEff:",
                  b"CapBnd:", b"CapAmb:", b"NoNewPrivs:", b"Seccomp:")
NAMESPACES = ("mnt", "net", "pid", "ipc", "uts", "user", "cgroup", "time")


def _privileges(pid: int | str) -> list[bytes]:
    with open(f"/proc/{pid}/status", "rb") as f:
        return [line for line in f if line.startswith(PRIVILEGE_KEYS)]


def _place(pid: int | str) -> list[tuple[int, int]]:
    out = []
    for name in (*(f"ns/{ns}" for ns in NAMESPACES), "root"):
        try:
            st = os.stat(f"/proc/{pid}/{name}")
            out.append((st.st_dev, st.st_ino))
        except FileNotFoundError:
            out.append((-1, -1))  # a namespace kind this kernel lacks
    return out


def differs_from_self(pid: int) -> str:
    """Why process ``pid`` may not have this process act for it ("" if it
    may): it must hold exactly this process's ids, groups, capabilities,
    no_new_privs and seccomp state, and live in the same namespaces with
    the same root directory. Anything less, and acting for it could do
    what it itself may not."""
    try:
        if _privileges(pid) != _privileges("self"):
            return "its credentials differ from the server's"
        if _place(pid) != _place("self"):
            return "its namespaces or root directory differ from the server's"
    except OSError as exc:
        return f"cannot read its credentials: {exc.strerror}"
    return ""
