"""Safe paths for layer extraction: name checks and a directory walker that
never follows a symlink.

Every write of a layer lands relative to a directory fd obtained here. Parent
directories are opened with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
(or, where openat2 is missing, one ``O_NOFOLLOW`` component at a time), so a
symlink anywhere in an entry's parent path, whether it came from a lower
layer or from an earlier entry of the same layer, is refused instead of
followed. Leaf operations use the ``*at`` calls with no-follow flags.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from isobox.linux import libc

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS
# openat2 unusable (old kernel, seccomp filter): walk one component at a time.
_NO_OPENAT2 = (errno.ENOSYS, errno.EPERM, errno.E2BIG)


class EntryError(Exception):
    """One layer entry is unsafe or malformed; the caller names the entry."""


def split_path(name: str, max_path: int, max_component: int,
               max_depth: int = 256) -> tuple[str, ...]:
    """The components of an archive path, checked: no NUL, not absolute, no
    ``..``, within the length and depth limits. ``.`` and empty components are
    dropped, so ``./a//b/`` is ``("a", "b")`` and ``./`` is the root ``()``."""
    if "\0" in name:
        raise EntryError("NUL byte in path")
    if name.startswith("/"):
        raise EntryError("absolute path")
    if len(name) > max_path // 4 and len(os.fsencode(name)) > max_path:
        raise EntryError(f"path longer than {max_path} bytes")
    parts = tuple(name.split("/"))
    if "" in parts or "." in parts or ".." in parts:
        parts = tuple(p for p in parts if p and p != ".")
        if ".." in parts:
            raise EntryError("'..' in path")
    if len(parts) > max_depth:
        raise EntryError(f"path deeper than {max_depth} directories")
    if len(name) > max_component // 4:
        for part in parts:
            if len(part) > max_component // 4 and len(os.fsencode(part)) > max_component:
                raise EntryError(f"path component longer than {max_component} bytes")
    return parts


def _refusal(exc: OSError, parts: tuple[str, ...]) -> EntryError | None:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return EntryError(f"parent {'/'.join(parts)!r} is or goes through a symlink, "
                          "or is not a directory")
    if exc.errno == errno.EXDEV:
        return EntryError(f"parent {'/'.join(parts)!r} leaves the tree")
    return None


def _culprit(root_fd: int, parts: tuple[str, ...]) -> EntryError:
    """Which component of a refused parent path is the symlink or non-directory."""
    cur = root_fd
    try:
        for i, name in enumerate(parts):
            where = "/".join(parts[: i + 1])
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(st.st_mode):
                return EntryError(f"parent {where!r} is a symlink")
            if not stat.S_ISDIR(st.st_mode):
                return EntryError(f"parent {where!r} is not a directory")
            nxt = os.open(name, DIR_FLAGS, dir_fd=cur)
            if cur != root_fd:
                os.close(cur)
            cur = nxt
    finally:
        if cur != root_fd:
            os.close(cur)
    return EntryError(f"parent {'/'.join(parts)!r} is not a plain directory")


class Tree:
    """Directory fds inside one root, opened without following symlinks.

    Keeps the last parent opened (consecutive entries mostly share one); a
    removed directory must be reported with ``forget``."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._cached: tuple[str, ...] = ()
        self._cached_fd = -1
        self._openat2 = True

    def dir_fd(self, parts: tuple[str, ...]) -> int:
        """A borrowed fd of directory ``parts``, created (0755) where missing.
        Valid until the next call or ``invalidate``."""
        if not parts:
            return self.root_fd
        if parts == self._cached and self._cached_fd >= 0:
            return self._cached_fd
        fd = self.open_dir(parts, create=True)
        self.invalidate()
        self._cached, self._cached_fd = parts, fd
        return fd

    def open_dir(self, parts: tuple[str, ...], *, create: bool = False) -> int:
        """A new fd (the caller closes it) of directory ``parts``."""
        if not parts:
            return os.dup(self.root_fd)
        if self._openat2:
            try:
                return libc.openat2(self.root_fd, "/".join(parts), DIR_FLAGS, resolve=_RESOLVE)
            except FileNotFoundError:
                if not create:
                    raise
            except OSError as exc:
                if _refusal(exc, parts) is not None:
                    raise _culprit(self.root_fd, parts) from None
                if exc.errno not in _NO_OPENAT2:
                    raise
                self._openat2 = False
        return self._walk(parts, create)

    def _walk(self, parts: tuple[str, ...], create: bool) -> int:
        cur = self.root_fd
        for i, name in enumerate(parts):
            try:
                try:
                    nxt = os.open(name, DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o755, dir_fd=cur)
                    except FileExistsError:
                        pass
                    nxt = os.open(name, DIR_FLAGS, dir_fd=cur)
            except OSError as exc:
                if _refusal(exc, parts[: i + 1]) is not None:
                    raise _culprit(self.root_fd, parts) from None
                raise
            finally:
                if cur != self.root_fd:
                    os.close(cur)
            cur = nxt
        return cur

    def forget(self, parts: tuple[str, ...]) -> None:
        """Directory ``parts`` was removed: drop the cached fd at or under it."""
        if self._cached[: len(parts)] == parts:
            self.invalidate()

    def invalidate(self) -> None:
        if self._cached_fd >= 0:
            os.close(self._cached_fd)
        self._cached, self._cached_fd = (), -1

    def close(self) -> None:
        self.invalidate()


def remove(dir_fd: int, name: str) -> bool:
    """Remove ``name`` (a whole tree if a directory) without following
    symlinks. True when a directory was removed (cached fds are stale)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
        return True
    os.unlink(name, dir_fd=dir_fd)
    return False


def fd_path(dir_fd: int, name: str) -> str:
    """A path for calls with no ``dir_fd`` form (xattrs, chmod): the magic
    link names exactly the directory inode; ``name`` is the leaf, which the
    caller does not follow."""
    return f"/proc/self/fd/{dir_fd}/{name}"
