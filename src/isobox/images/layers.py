"""Apply one layer tarball to a directory, safely and in one streaming pass.

``tarstream.TarReader`` parses the stream (see there why not tarfile); every
entry is applied here, relative to directory fds that ``tarsafe.Tree`` opened
without following any symlink, so nothing can be written outside ``target``. Hostile entries raise
one ``InvalidArgument`` naming the entry; the caller removes the partly
written directory.

Whiteouts, two modes:

``overlay`` (default): the layer is unpacked alone into an empty directory
    that later serves as an overlayfs lower layer: ``.wh.<name>`` becomes a
    0/0 character device ``<name>``; ``.wh..wh..opq`` sets
    ``trusted.overlay.opaque=y`` on its directory.
``flat``: the layer is applied on top of the lower layers' content already in
    ``target``: ``.wh.<name>`` removes ``<name>``; ``.wh..wh..opq`` removes what
    its directory holds that this layer did not write.

``trusted.overlay.*`` and ``user.overlay.*`` xattrs from the archive are
dropped (with a warning): they would let an image steer the overlay mount.
Device nodes that cannot be made (EPERM, e.g. in a user namespace) are
skipped with a warning, as are xattrs the filesystem refuses (ENOTSUP, EPERM).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Literal

from isobox.errors import InvalidArgument, Unavailable
from isobox.images import tarsafe
from isobox.images.layerstream import DEFAULT_LIMITS, LayerStream, Limits
from isobox.images.tarsafe import EntryError
from isobox.images.tarstream import BLK, CHR, DIR, FIFO, LNK, REG, SYM, Entry, TarReader

__all__ = ["DEFAULT_LIMITS", "LayerResult", "Limits", "apply_layer"]

log = logging.getLogger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_DROPPED_XATTRS = ("trusted.overlay.", "user.overlay.")
_HOST_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE)
_IGNORABLE = (errno.ENOTSUP, errno.EPERM)
_MAX_WARNINGS = 50
Mode = Literal["overlay", "flat"]


@dataclass(frozen=True)
class LayerResult:
    diff_id: str            #: sha256 of the whole uncompressed tar stream
    size: int               #: bytes of regular-file content written
    entries: int            #: archive entries read
    skipped: int = 0        #: entries or attributes skipped (see warnings)
    warnings: tuple[str, ...] = ()  #: the first few skip reasons


def _show(name: str) -> str:
    return repr(name if len(name) <= 200 else name[:200] + "...")


def apply_layer(src: BinaryIO, target: str, *, limits: Limits = DEFAULT_LIMITS,
                mode: Mode = "overlay") -> LayerResult:
    """Apply the layer read from ``src`` (gzip, zstd or plain tar) to the
    directory ``target``; returns its diff_id and the bytes written."""
    if mode not in ("overlay", "flat"):
        raise InvalidArgument(f"unknown layer apply mode {mode!r}")
    stream = LayerStream(src, limits)
    reader = TarReader(stream)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    applier = _Applier(root_fd, reader, mode, limits)
    entries = 0
    try:
        while (entry := reader.next()) is not None:
            entries += 1
            if entries > limits.max_entries:
                raise InvalidArgument(f"layer has more than {limits.max_entries} entries")
            applier.apply(entry)
        reader.drain()
        applier.finish()
    finally:
        applier.close()
        os.close(root_fd)
    return LayerResult(stream.diff_id, applier.size, entries, applier.skipped,
                       tuple(applier.warnings))


class _Applier:
    def __init__(self, root_fd: int, reader: TarReader, mode: Mode, limits: Limits) -> None:
        self.tree = tarsafe.Tree(root_fd)
        self.reader = reader
        self._handlers = {REG: self._file, DIR: self._dir, SYM: self._symlink,
                          LNK: self._hardlink, CHR: self._node, BLK: self._node,
                          FIFO: self._node}
        self.flat = mode == "flat"
        self.limits = limits
        self.size = 0
        self.skipped = 0
        self.warnings: list[str] = []
        self._dir_times: dict[tuple[str, ...], tuple[int, int]] = {}
        self._unpacked: set[tuple[str, ...]] = set()  # flat mode: what opaque dirs keep

    def warn(self, message: str) -> None:
        self.skipped += 1
        log.warning("layer: %s", message)
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(message)

    def apply(self, m: Entry) -> None:
        try:
            self._apply(m)
        except EntryError as exc:
            raise InvalidArgument(f"layer entry {_show(m.name)}: {exc}") from None
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument(f"layer entry {_show(m.name)}: bad header value "
                                  f"({exc})") from None
        except OSError as exc:
            what = f"layer entry {_show(m.name)}: {exc.strerror or exc}"
            if exc.errno in _HOST_ERRORS:
                raise Unavailable(f"cannot unpack {what}") from exc
            raise InvalidArgument(what) from exc

    def _apply(self, m: Entry) -> None:
        lim = self.limits
        parts = tarsafe.split_path(m.name, lim.max_path, lim.max_component, lim.max_depth)
        if not parts:
            return  # "./": the root itself keeps its own attributes
        if parts[-1].startswith(WHITEOUT):
            self._whiteout(parts)
            return
        handler = self._handlers.get(m.type)
        if handler is None:
            raise EntryError(f"unsupported entry type {m.type.decode('latin-1')!r}")
        if self.flat:
            self._record(parts)
        handler(m, self.tree.dir_fd(parts[:-1]), parts)

    # -- entry types --------------------------------------------------------

    def _file(self, m: Entry, pfd: int, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(leaf, flags, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._replace(pfd, parts)
            fd = os.open(leaf, flags, 0o600, dir_fd=pfd)
        try:
            if m.size:
                for view in self.reader.data(m):
                    while view:
                        view = view[os.write(fd, view):]
                self.size += m.size
            self._owner(m, fd)  # before the mode (chown clears setuid) and the
            os.fchmod(fd, m.mode)  # xattrs (it clears security.capability)
            if m.xattrs:
                self._set_xattrs(m, fd)
            os.utime(fd, ns=(m.atime_ns, m.mtime_ns))
        finally:
            os.close(fd)

    def _dir(self, m: Entry, pfd: int, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        try:
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):  # a directory merges; anything else goes
                os.unlink(leaf, dir_fd=pfd)
                os.mkdir(leaf, 0o700, dir_fd=pfd)
        fd = os.open(leaf, tarsafe.DIR_FLAGS, dir_fd=pfd)
        try:
            self._owner(m, fd)
            os.fchmod(fd, m.mode)
            if m.xattrs:
                self._set_xattrs(m, fd)
        finally:
            os.close(fd)
        self._dir_times[parts] = (m.atime_ns, m.mtime_ns)

    def _symlink(self, m: Entry, pfd: int, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        text = m.linkname
        if not text:
            raise EntryError("symlink with an empty target")
        if "\0" in text:
            raise EntryError("NUL byte in symlink target")
        limit = self.limits.max_path
        if len(text) > limit // 4 and len(os.fsencode(text)) >= limit:
            raise EntryError("symlink target too long")
        try:
            os.symlink(text, leaf, dir_fd=pfd)
        except FileExistsError:
            self._replace(pfd, parts)
            os.symlink(text, leaf, dir_fd=pfd)
        self._leaf_attrs(m, pfd, leaf)

    def _hardlink(self, m: Entry, pfd: int, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        try:
            lim = self.limits
            lparts = tarsafe.split_path(m.linkname, lim.max_path, lim.max_component,
                                        lim.max_depth)
        except EntryError as exc:
            raise EntryError(f"hardlink target {_show(m.linkname)}: {exc}") from None
        if not lparts:
            raise EntryError("hardlink to the root directory")
        try:
            sfd = self.tree.open_dir(lparts[:-1])
        except FileNotFoundError:
            raise EntryError(f"hardlink target {_show(m.linkname)} is not in the "
                             "layer") from None
        except EntryError as exc:
            raise EntryError(f"hardlink target: {exc}") from None
        try:
            try:
                os.link(lparts[-1], leaf, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                if os.path.samestat(os.stat(lparts[-1], dir_fd=sfd, follow_symlinks=False),
                                    os.stat(leaf, dir_fd=pfd, follow_symlinks=False)):
                    return
                self._replace(pfd, parts)
                os.link(lparts[-1], leaf, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            raise EntryError(f"hardlink target {_show(m.linkname)} is not in the "
                             "layer") from None
        except PermissionError:
            raise EntryError(f"hardlink target {_show(m.linkname)} is a directory or "
                             "cannot be linked") from None
        finally:
            os.close(sfd)

    def _node(self, m: Entry, pfd: int, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        kind = {FIFO: stat.S_IFIFO, CHR: stat.S_IFCHR}.get(m.type, stat.S_IFBLK)
        dev = 0 if m.type == FIFO else os.makedev(m.devmajor, m.devminor)
        try:
            try:
                os.mknod(leaf, kind | 0o600, dev, dir_fd=pfd)
            except FileExistsError:
                self._replace(pfd, parts)
                os.mknod(leaf, kind | 0o600, dev, dir_fd=pfd)
        except PermissionError:
            self.warn(f"{m.name}: no permission to create a device node; skipped")
            return
        self._leaf_attrs(m, pfd, leaf, chmod=True)

    # -- whiteouts ----------------------------------------------------------

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        leaf = parts[-1]
        if leaf == OPAQUE:
            self._opaque(parts[:-1])
            return
        name = leaf[len(WHITEOUT):]
        if name.startswith(WHITEOUT):
            return  # AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content
        if not name or name in (".", ".."):
            raise EntryError("whiteout of nothing")
        pfd = self.tree.dir_fd(parts[:-1])
        if self.flat:
            self._record(parts[:-1])
            self._replace(pfd, (*parts[:-1], name))
            return
        try:
            os.mknod(name, stat.S_IFCHR | 0o600, 0, dir_fd=pfd)
        except FileExistsError:
            self._replace(pfd, (*parts[:-1], name))
            os.mknod(name, stat.S_IFCHR | 0o600, 0, dir_fd=pfd)

    def _opaque(self, dir_parts: tuple[str, ...]) -> None:
        if not self.flat:
            os.setxattr(self.tree.dir_fd(dir_parts), OPAQUE_XATTR, b"y")
            return
        self._record(dir_parts)
        fd = self.tree.open_dir(dir_parts, create=True)
        try:
            self._purge(fd, dir_parts)
        finally:
            os.close(fd)
        self.tree.invalidate()

    def _purge(self, dfd: int, prefix: tuple[str, ...]) -> None:
        """Flat mode: remove what ``dfd`` holds that this layer did not write."""
        with os.scandir(dfd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            rel = (*prefix, name)
            if rel not in self._unpacked:
                tarsafe.remove(dfd, name)
            elif is_dir:
                sub = os.open(name, tarsafe.DIR_FLAGS, dir_fd=dfd)
                try:
                    self._purge(sub, rel)
                finally:
                    os.close(sub)

    def _record(self, parts: tuple[str, ...]) -> None:
        for i in range(len(parts), 0, -1):
            prefix = parts[:i]
            if prefix in self._unpacked:
                break
            self._unpacked.add(prefix)

    # -- attributes ---------------------------------------------------------

    def _replace(self, pfd: int, parts: tuple[str, ...]) -> None:
        """Remove the entry ``parts`` (its parent is ``pfd``, which stays valid)."""
        if tarsafe.remove(pfd, parts[-1]):
            self.tree.forget(parts)

    def _owner(self, m: Entry, fd: int) -> None:
        try:
            os.fchown(fd, m.uid, m.gid)
        except PermissionError:
            self.warn(f"{m.name}: cannot chown to {m.uid}:{m.gid}")

    def _leaf_attrs(self, m: Entry, pfd: int, leaf: str, chmod: bool = False) -> None:
        """Owner, mode, xattrs and times of a symlink or device node, never
        followed (no fd can be opened on them for writing)."""
        try:
            os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        except PermissionError:
            self.warn(f"{m.name}: cannot chown to {m.uid}:{m.gid}")
        if chmod:  # a node this layer just made: O_PATH pins exactly that inode
            fd = os.open(leaf, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                os.chmod(f"/proc/self/fd/{fd}", m.mode)
            finally:
                os.close(fd)
        if m.xattrs:
            self._set_xattrs(m, tarsafe.fd_path(pfd, leaf))
        os.utime(leaf, ns=(m.atime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _set_xattrs(self, m: Entry, where: int | str) -> None:
        for name, value in (m.xattrs or {}).items():
            if name.startswith(_DROPPED_XATTRS):
                self.warn(f"{m.name}: dropped xattr {name}")
                continue
            if not name or "\0" in name:
                raise EntryError(f"bad xattr name {name!r}")
            try:
                if isinstance(where, int):
                    os.setxattr(where, name, value)
                else:
                    os.setxattr(where, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _IGNORABLE:
                    raise EntryError(f"cannot set xattr {name}: {exc.strerror}") from None
                self.warn(f"{m.name}: xattr {name} not kept ({exc.strerror})")

    def finish(self) -> None:
        """Directory mtimes, once nothing more is written inside them."""
        self.tree.invalidate()
        for parts, times in self._dir_times.items():
            try:
                fd = self.tree.open_dir(parts)
            except (FileNotFoundError, EntryError):
                continue  # removed or replaced by a later entry
            try:
                os.utime(fd, ns=times)
            finally:
                os.close(fd)

    def close(self) -> None:
        self.tree.close()
