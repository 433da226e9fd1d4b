"""Unix socket paths longer than sun_path allows (108 bytes).

A container directory can sit deep (tests, long roots, 64-hex ids); the path
is then reached through ``/proc/<pid>/fd/<dirfd>/<name>``, a short path to the
same directory while a descriptor of it stays open.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

MAX_PATH = 100  # sun_path is 108 bytes, NUL included; keep a margin


class ShortPath:
    """``with ShortPath(path) as short:`` a bindable/connectable name for path."""

    def __init__(self, path: str, pid: int | str = "self") -> None:
        self.path = path
        self.pid = pid
        self._dirfd = -1

    def __enter__(self) -> str:
        return self.open()

    def open(self) -> str:
        """The short name; valid until close()."""
        if len(os.fsencode(self.path)) <= MAX_PATH:
            return self.path
        directory, name = os.path.split(self.path)
        self._dirfd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/{self.pid}/fd/{self._dirfd}/{name}"

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._dirfd >= 0:
            os.close(self._dirfd)
            self._dirfd = -1


def bind_private(sock: Any, path: str) -> None:
    """Bind ``sock`` (AF_UNIX, any type) to ``path``, however deep, mode
    0600 from the start (no window where others could connect); a leftover
    socket file there is replaced."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        with ShortPath(path) as short:
            sock.bind(short)
    finally:
        os.umask(old)
