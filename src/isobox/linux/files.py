"""Atomic file writes (a reader sees the old content or the new, never
half), lines read with a timeout, flocks taken with one."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def atomic_write(path: str, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (temp file + rename). ``durable``: fsync
    the file and its directory, so the new content survives a crash of the
    host; without it a reader still sees old or new, never half, but after a
    crash of the host the file may hold the old content, or (on filesystems
    that do not flush a file renamed over another) none."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    if not durable:
        return
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_line(fd: int, timeout: float) -> bytes | None:
    """One line from fd (or what came before EOF), without its newline; None
    on timeout. For a child's one-line report on a pipe."""
    import select
    import time

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if not poller.poll(int(left * 1000) + 1):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.partition(b"\n")[0]


def flock_within(fd: int, seconds: float, between: Callable[[], object] | None = None,
                 step: float = 0.01) -> bool:
    """Take an exclusive flock on ``fd``, trying for up to ``seconds``
    (``between`` runs after each refusal); whether it was taken."""
    import fcntl
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
        if between is not None:
            between()
        time.sleep(step)
