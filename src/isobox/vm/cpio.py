"""A streaming writer of the "newc" cpio format, the one the kernel unpacks
as an initramfs. Everything is owned by root; each entry gets its own inode
number (no hardlinks), so the kernel never links two entries together."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class CpioWriter:
    """Entries are written as they are added; ``finish`` writes the trailer.

    Paths are relative (``bin/busybox``), as the kernel expects; a leading
    ``/`` is dropped. Parents must be added before their children."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self.names: set[str] = set()

    def directory(self, path: str, mode: int = 0o755, mtime: int = 0) -> None:
        self._entry(path, stat.S_IFDIR | mode, b"", mtime)

    def file(self, path: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> None:
        self._entry(path, stat.S_IFREG | mode, data, mtime)

    def file_from(self, path: str, source: str, mode: int | None = None) -> None:
        """A regular file copied from the host, streamed in chunks."""
        with open(source, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            self._header(path, stat.S_IFREG | (stat.S_IMODE(st.st_mode) if mode is None else mode),
                         size, int(st.st_mtime))
            copied = _copy_exactly(f, self._out, size)
            if copied != size:
                raise OSError(f"{source} changed size while being archived")
            self._pad(size)

    def symlink(self, path: str, target: str) -> None:
        self._entry(path, stat.S_IFLNK | 0o777, target.encode(), 0)

    def char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(path, stat.S_IFCHR | mode, b"", 0, rdev=(major, minor))

    def finish(self) -> None:
        self._ino = -1  # the trailer's inode is 0
        self._entry(TRAILER, 0, b"", 0)
        self._out.flush()

    def _entry(self, path: str, mode: int, data: bytes, mtime: int,
               rdev: tuple[int, int] = (0, 0)) -> None:
        self._header(path, mode, len(data), mtime, rdev)
        self._out.write(data)
        self._pad(len(data))

    def _header(self, path: str, mode: int, size: int, mtime: int,
                rdev: tuple[int, int] = (0, 0)) -> None:
        name = path.lstrip("/")
        if not name or name in self.names:
            raise ValueError(f"cpio entry {path!r} is empty or already written")
        if name != TRAILER:
            self.names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self._ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = _MAGIC + b"".join(b"%08x" % v for v in fields) + encoded
        self._out.write(header)
        self._pad(len(header))

    def _pad(self, length: int) -> None:
        self._out.write(b"\0" * (-length % 4))


def _copy_exactly(src: BinaryIO, dst: BinaryIO, size: int) -> int:
    copied = 0
    while copied < size:
        chunk = src.read(min(1 << 20, size - copied))
        if not chunk:
            break
        dst.write(chunk)
        copied += len(chunk)
    return copied
