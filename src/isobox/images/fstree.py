"""File trees copied without following anyone's symlinks: for ``cp``,
``export`` and ``commit`` (on the host, and in a VM's guest for ``cp`` into
a running VM-isolated container).

Sources yield :class:`Node` values: :func:`walk` reads a tree through
directory fds opened with ``O_NOFOLLOW`` below a parent fd the caller
resolved (inside a container: with ``RESOLVE_IN_ROOT``), and
:func:`tar_nodes` reads a tar stream. Sinks take them: :class:`Extractor`
creates each entry relative to directory fds opened by ``tarsafe.Tree``
(no symlink anywhere in a parent path, whether it was there before or came
with an earlier entry), :class:`TarSink` writes a tar stream. A container
can swap a directory for a symlink at any moment: the walk then fails with
ELOOP or ENOTDIR instead of leaving the tree.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from isobox.errors import Conflict, InvalidArgument
from isobox.images import tarsafe
from isobox.images.tarstream import BLK, CHR, DIR, FIFO, LNK, REG, SYM, TarReader
from isobox.linux import libc

_IN_ROOT = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_HOPS = 40

DIR_FLAGS = tarsafe.DIR_FLAGS
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
_MAX_PATH = 4096 * 4
_MAX_COMPONENT = 255 * 4
OPAQUE_XATTR = "trusted.overlay.opaque"

#: Skip(arcname, lstat) -> True to leave an entry (and what is below it) out.
Skip = Callable[[str, os.stat_result], bool]


@dataclass
class Node:
    name: str                      #: "/"-separated, relative ("etc/passwd", "." for a root)
    kind: bytes                    #: tarstream type: REG DIR SYM LNK CHR BLK FIFO
    mode: int                      #: permission bits, setuid/setgid/sticky included
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    size: int = 0
    linkname: str = ""             #: SYM: the target; LNK: the arcname linked to
    rdev: int = 0
    data: Iterable[bytes | memoryview] = field(default_factory=tuple)
    opaque: bool = False           #: an overlay opaque directory (walk(overlay=True))


def _kind(st: os.stat_result) -> bytes | None:
    m = st.st_mode
    for test, kind in ((stat.S_ISREG, REG), (stat.S_ISDIR, DIR), (stat.S_ISLNK, SYM),
                       (stat.S_ISCHR, CHR), (stat.S_ISBLK, BLK), (stat.S_ISFIFO, FIFO)):
        if test(m):
            return kind
    return None  # sockets: not representable, left out as Docker does


def _chunks(fd: int) -> Iterator[bytes]:
    while True:
        block = os.read(fd, _CHUNK)
        if not block:
            return
        yield block


def walk(parent_fd: int, leaf: str, arcname: str, *, skip: Skip | None = None,
         st: os.stat_result | None = None, overlay: bool = False) -> Iterator[Node]:
    """``leaf`` of directory ``parent_fd`` and everything below it, in sorted
    order, as entries named under ``arcname``. ``leaf`` "." walks the
    directory ``parent_fd`` itself. Hard links after the first are LNK.
    ``overlay``: read the opaque mark of directories (an overlay upper dir)."""
    links: dict[tuple[int, int], str] = {}
    if st is None:
        st = os.stat(leaf, dir_fd=parent_fd, follow_symlinks=False)
    yield from _walk_one(parent_fd, leaf, arcname, st, links, (skip, overlay))


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


def _walk_one(parent_fd: int, leaf: str, arcname: str, st: os.stat_result,
              links: dict[tuple[int, int], str], how: tuple[Skip | None, bool]
              ) -> Iterator[Node]:
    skip, overlay = how
    kind = _kind(st)
    if kind is None or (skip is not None and skip(arcname, st)):
        return
    node = Node(arcname, kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    if kind != DIR and st.st_nlink > 1:
        first = links.setdefault((st.st_dev, st.st_ino), arcname)
        if first != arcname:
            node.kind, node.linkname = LNK, first
            yield node
            return
    if kind == REG:
        fd = os.open(leaf, _FILE_FLAGS, dir_fd=parent_fd)
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise Conflict(f"{arcname} changed while it was copied")
            node.size, node.data = now.st_size, _chunks(fd)
            yield node
        finally:
            os.close(fd)
        return
    if kind == SYM:
        node.linkname = os.readlink(leaf, dir_fd=parent_fd)
        yield node
        return
    if kind in (CHR, BLK):
        node.rdev = st.st_rdev
    if kind != DIR:
        yield node
        return
    fd = os.open(leaf, DIR_FLAGS, dir_fd=parent_fd)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise Conflict(f"{arcname} changed while it was copied")
        node.opaque = overlay and _opaque(fd)
        yield node
        prefix = "" if arcname == "." else arcname.rstrip("/") + "/"
        for name in sorted(os.listdir(fd)):
            try:
                child = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile
            yield from _walk_one(fd, name, prefix + name, child, links, how)
    finally:
        os.close(fd)


def tar_nodes(src: BinaryIO) -> Iterator[Node]:
    """The entries of a tar stream (plain), data read as they are consumed."""
    reader = TarReader(src)
    while (entry := reader.next()) is not None:
        if entry.type not in (REG, DIR, SYM, LNK, CHR, BLK, FIFO):
            raise InvalidArgument(f"archive entry {entry.name!r}: unsupported type "
                                  f"{entry.type.decode('latin-1')!r}")
        yield Node(entry.name, entry.type, entry.mode & 0o7777, entry.uid, entry.gid,
                   entry.mtime_ns, entry.size, entry.linkname,
                   os.makedev(entry.devmajor, entry.devminor),
                   reader.data(entry) if entry.type == REG else ())


def locate(root_fd: int, path: str, follow: bool
           ) -> tuple[int, str, os.stat_result | None]:
    """(directory fd, leaf, lstat of leaf or None) of the normalized absolute
    ``path`` inside the root; ``follow`` follows a final symlink, in the root.
    The parent must exist (FileNotFoundError otherwise)."""
    fd, leaf, st, _ = resolve(root_fd, path, follow)
    return fd, leaf, st


def resolve(root_fd: int, path: str, follow: bool
            ) -> tuple[int, str, os.stat_result | None, str]:
    """:func:`locate`, and the path it found (after the final symlink)."""
    for _ in range(_MAX_HOPS):
        parent, leaf = posixpath.split(path)
        if not leaf:  # "/"
            fd = libc.openat2(root_fd, ".", _OPEN_DIR, resolve=_IN_ROOT)
            return fd, ".", os.fstat(fd), "/"
        fd = libc.openat2(root_fd, parent.lstrip("/") or ".", _OPEN_DIR, resolve=_IN_ROOT)
        try:
            st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return fd, leaf, None, path
        except BaseException:
            os.close(fd)
            raise
        if not (follow and stat.S_ISLNK(st.st_mode)):
            return fd, leaf, st, path
        target = os.readlink(leaf, dir_fd=fd)
        os.close(fd)
        path = posixpath.normpath(posixpath.join(parent, target))
    raise InvalidArgument(f"{path}: too many levels of symbolic links")


# -- sinks -----------------------------------------------------------------------------


class Extractor:
    """Creates nodes below the directory ``root_fd``. ``owner``: "keep" (the
    nodes' uid/gid), "none" (the caller's), or a fixed (uid, gid). Like
    Docker's untar with NoOverwriteDirNonDir, a directory never replaces a
    non-directory nor the reverse."""

    def __init__(self, root_fd: int, *, owner: str | tuple[int, int] = "keep") -> None:
        self.tree = tarsafe.Tree(root_fd)
        self.owner = owner
        self.copied = 0
        self._dir_times: list[tuple[tuple[str, ...], int]] = []

    def _parts(self, name: str) -> tuple[str, ...]:
        try:
            parts = tarsafe.split_path(name, _MAX_PATH, _MAX_COMPONENT)
        except tarsafe.EntryError as exc:
            raise InvalidArgument(f"archive entry {name!r}: {exc}") from None
        return parts

    def add(self, node: Node) -> None:
        parts = self._parts(node.name)
        if not parts:
            return  # the destination directory keeps its own attributes
        try:
            pfd = self.tree.dir_fd(parts[:-1])
            self._add(node, pfd, parts)
        except tarsafe.EntryError as exc:
            raise InvalidArgument(f"cannot copy {node.name!r}: {exc}") from None

    def _add(self, node: Node, pfd: int, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        try:
            old = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        shown = "/".join(parts)
        if old is not None:
            if stat.S_ISDIR(old.st_mode) and node.kind != DIR:
                raise Conflict(f'cannot overwrite directory "{shown}" with non-directory '
                               f'"{node.name}"')
            if not stat.S_ISDIR(old.st_mode) and node.kind == DIR:
                raise Conflict(f'cannot overwrite non-directory "{shown}" with directory '
                               f'"{node.name}"')
            if node.kind != DIR:
                os.unlink(leaf, dir_fd=pfd)
        if node.kind == DIR:
            if old is None:
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            fd = os.open(leaf, DIR_FLAGS, dir_fd=pfd)
            try:
                self._attrs(fd, node)
            finally:
                os.close(fd)
            self._dir_times.append((parts, node.mtime_ns))
        elif node.kind == REG:
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=pfd)
            try:
                for block in node.data:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
                    self.copied += len(block)
                self._attrs(fd, node)
                os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))
            finally:
                os.close(fd)
        elif node.kind == SYM:
            os.symlink(node.linkname, leaf, dir_fd=pfd)
            self._chown(leaf, pfd, node)
            os.utime(leaf, ns=(node.mtime_ns, node.mtime_ns), dir_fd=pfd,
                     follow_symlinks=False)
        elif node.kind == LNK:
            target = self._parts(node.linkname)
            if not target:
                raise InvalidArgument(f"hard link {node.name!r} to the destination itself")
            tfd = self.tree.open_dir(target[:-1])
            try:
                os.link(target[-1], leaf, src_dir_fd=tfd, dst_dir_fd=pfd,
                        follow_symlinks=False)
            finally:
                os.close(tfd)
        else:
            kind = {CHR: stat.S_IFCHR, BLK: stat.S_IFBLK, FIFO: stat.S_IFIFO}[node.kind]
            os.mknod(leaf, kind | 0o600, node.rdev, dir_fd=pfd)
            self._chown(leaf, pfd, node)
            # chmod through an O_PATH fd of the node itself: a path could be
            # swapped for a symlink meanwhile, and chmod follows symlinks.
            fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                if stat.S_IFMT(os.fstat(fd).st_mode) == kind:
                    os.chmod(f"/proc/self/fd/{fd}", node.mode)
            finally:
                os.close(fd)

    def _ids(self, node: Node) -> tuple[int, int] | None:
        if self.owner == "keep":
            return node.uid, node.gid
        if self.owner == "none":
            return None
        return self.owner  # type: ignore[return-value]

    def _attrs(self, fd: int, node: Node) -> None:
        ids = self._ids(node)
        if ids is not None:
            os.fchown(fd, *ids)  # before the mode: chown clears setuid
        os.fchmod(fd, node.mode)

    def _chown(self, leaf: str, pfd: int, node: Node) -> None:
        ids = self._ids(node)
        if ids is not None:
            os.chown(leaf, *ids, dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory times, deepest first (writing inside changed them)."""
        self.tree.invalidate()
        for parts, mtime in sorted(self._dir_times, key=lambda p: -len(p[0])):
            try:
                fd = self.tree.open_dir(parts)
            except (OSError, tarsafe.EntryError):
                continue
            try:
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
        self.tree.close()


class _Exact:
    """Exactly ``size`` bytes of ``chunks`` (cut, or padded with zeros when
    the file shrank while it was read): a tar header promised that many."""

    def __init__(self, chunks: Iterable[bytes | memoryview], size: int) -> None:
        self._it = iter(chunks)
        self._left = size
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self._left
        n = min(n, self._left)
        while len(self._buf) < n:
            more = next(self._it, None)
            if more is None:
                self._buf += bytes(n - len(self._buf))
                break
            self._buf += bytes(more)
        out, self._buf = self._buf[:n], self._buf[n:]
        self._left -= len(out)
        return out


class TarSink:
    """Writes nodes as a PAX tar stream (``w|``: nothing is seeked), or into
    an open TarFile (``finish`` then leaves it open)."""

    def __init__(self, out: BinaryIO | None = None, *, tf: tarfile.TarFile | None = None
                 ) -> None:
        self._own = tf is None
        self._tf = tf if tf is not None else tarfile.open(  # noqa: SIM115
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
            errors="surrogateescape")
        self.copied = 0
        self.entries = 0

    def add(self, node: Node) -> None:
        self.entries += 1
        info = tarfile.TarInfo(node.name + ("/" if node.kind == DIR and node.name != "."
                                            else ""))
        info.type = node.kind
        info.mode = node.mode
        info.uid, info.gid = node.uid, node.gid
        info.mtime = node.mtime_ns // 1_000_000_000
        info.linkname = node.linkname
        if node.kind in (CHR, BLK):
            info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
        if node.kind == REG:
            info.size = node.size
            self._tf.addfile(info, _Exact(node.data, node.size))  # type: ignore[arg-type]
            self.copied += node.size
        else:
            self._tf.addfile(info)

    def finish(self) -> None:
        if self._own:
            self._tf.close()


def is_missing(exc: OSError) -> bool:
    return exc.errno in (errno.ENOENT, errno.ENOTDIR)
