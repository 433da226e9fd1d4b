"""Merge overlay-format layer directories into one, as overlayfs shows them.

Used when an image has more layers than one overlay mount can name: the
oldest layers become one read-only directory. Whiteouts (0/0 character
devices) remove what is below them, ``trusted.overlay.opaque=y`` directories
hide what is below them; everything that is not a directory is hard-linked
from the layer (layers are immutable, so sharing inodes is safe and costs no
space); directories are made anew with the layer's owner, mode, xattrs and
times. Symlinks are never followed: every step is relative to directory fds
opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from isobox.images import tarsafe

OPAQUE_XATTR = "trusted.overlay.opaque"
_SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


class _Merger:
    def __init__(self, dest_fd: int) -> None:
        self.dest_fd = dest_fd
        self.dir_times: dict[tuple[str, ...], tuple[int, int]] = {}

    def layer(self, src_fd: int) -> None:
        if _opaque(src_fd):
            self._clear(self.dest_fd, ())
        self._merge(src_fd, self.dest_fd, ())

    def _clear(self, fd: int, rel: tuple[str, ...]) -> None:
        for name in os.listdir(fd):
            tarsafe.remove(fd, name)
        for key in [k for k in self.dir_times if k[: len(rel)] == rel and k != rel]:
            del self.dir_times[key]

    def _merge(self, src_fd: int, dst_fd: int, rel: tuple[str, ...]) -> None:
        with os.scandir(src_fd) as it:
            names = [e.name for e in it]
        for name in names:
            st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
            if is_whiteout(st):
                tarsafe.remove(dst_fd, name)
            elif stat.S_ISDIR(st.st_mode):
                self._dir(src_fd, dst_fd, name, st, (*rel, name))
            else:
                tarsafe.remove(dst_fd, name)
                os.link(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)

    def _dir(self, src_fd: int, dst_fd: int, name: str, st: os.stat_result,
             rel: tuple[str, ...]) -> None:
        sub_src = os.open(name, tarsafe.DIR_FLAGS, dir_fd=src_fd)
        try:
            try:
                existing = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(name, dir_fd=dst_fd)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=dst_fd)
            sub_dst = os.open(name, tarsafe.DIR_FLAGS, dir_fd=dst_fd)
            try:
                if existing is not None and _opaque(sub_src):
                    self._clear(sub_dst, rel)
                _copy_attrs(sub_src, sub_dst, st)
                self.dir_times[rel] = (st.st_atime_ns, st.st_mtime_ns)
                self._merge(sub_src, sub_dst, rel)
            finally:
                os.close(sub_dst)
        finally:
            os.close(sub_src)

    def finish(self) -> None:
        tree = tarsafe.Tree(self.dest_fd)
        for rel, times in self.dir_times.items():
            try:
                fd = tree.open_dir(rel)
            except (FileNotFoundError, tarsafe.EntryError):
                continue  # removed by a later layer's whiteout
            try:
                os.utime(fd, ns=times)
            finally:
                os.close(fd)


def _copy_attrs(src_fd: int, dst_fd: int, st: os.stat_result) -> None:
    os.fchown(dst_fd, st.st_uid, st.st_gid)
    os.fchmod(dst_fd, stat.S_IMODE(st.st_mode))
    for name in os.listxattr(dst_fd):
        if not name.startswith(_SKIPPED_XATTRS):
            os.removexattr(dst_fd, name)
    for name in os.listxattr(src_fd):
        if not name.startswith(_SKIPPED_XATTRS):
            os.setxattr(dst_fd, name, os.getxattr(src_fd, name))


def flatten(layers: Sequence[str], dest: str) -> None:
    """Merge the overlay-format ``layers`` (bottom first) into the empty
    directory ``dest``."""
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        merger = _Merger(dest_fd)
        for layer in layers:
            src_fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                merger.layer(src_fd)
            finally:
                os.close(src_fd)
        merger.finish()
    finally:
        os.close(dest_fd)
