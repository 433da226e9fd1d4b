"""The container's writable layer: ``docker diff`` and the layer that
``docker commit`` stores.

The writable layer is the overlay upper dir of the container's snapshot:
a 0/0 character device there is a whiteout (a deletion), a directory marked
``trusted.overlay.opaque=y`` hides what the lower layers hold below it.
Changes are classified as moby's ``OverlayChanges`` does: a whiteout, or an
opaque directory that exists below, is ``D``; an entry found in a lower
layer is ``C``; anything else ``A``; the parent of an added or deleted entry
is ``C`` too. The mount points the runtime creates for the container's own
mounts (Docker keeps them in its hidden init layer) are left out, from the
diff and from a commit. Both walk the upper dir through ``O_NOFOLLOW`` fds
(``fstree.walk``); lower layers are looked up with ``openat2`` and
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, so no symlink a container or an
image wrote is followed on the host.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from isobox.images import fstree
from isobox.images.tarstream import CHR, DIR, REG
from isobox.linux import libc

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService

#: Docker's init layer: mount points the runtime makes in the writable layer.
INIT_PATHS = frozenset({"/dev", "/proc", "/sys", "/etc/hosts", "/etc/hostname",
                        "/etc/resolv.conf", "/.dockerenv"})
_LOWER_RESOLVE = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class LayerDirs:
    upper: str
    lowers: list[str]   #: top first


def layer_dirs(service: ContainerService, record: ContainerRecord) -> LayerDirs:
    mounts = service.images.snapshots.mounts(record.snapshot)
    m = mounts[0]
    if m.type != "overlay":
        return LayerDirs(m.source, [])  # no image layers: the snapshot is its own dir
    opts = dict(o.partition("=")[::2] for o in m.options if "=" in o)
    lowers = [p for p in opts.get("lowerdir", "").split(":") if p]
    return LayerDirs(opts["upperdir"], lowers)


def _skip_init(arcname: str, st: os.stat_result) -> bool:
    return "/" + arcname in INIT_PATHS


def is_whiteout(node: fstree.Node) -> bool:
    return node.kind == CHR and node.rdev == 0


@contextlib.contextmanager
def _opened(dirs: LayerDirs) -> Iterator[tuple[int, list[int]]]:
    upper = os.open(dirs.upper, fstree.DIR_FLAGS)
    lowers: list[int] = []
    try:
        for path in dirs.lowers:
            lowers.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        yield upper, lowers
    finally:
        for fd in [upper, *lowers]:
            os.close(fd)


def _below(lowers: list[int], path: str) -> os.stat_result | None:
    """The entry at ``path`` in the topmost lower layer that has one (None
    when none has, or a layer deleted it)."""
    for fd in lowers:
        try:
            found = libc.openat2(fd, path.lstrip("/"), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 resolve=_LOWER_RESOLVE)
        except OSError:
            continue
        try:
            st = os.fstat(found)
        finally:
            os.close(found)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return None
        return st
    return None


def changes(service: ContainerService, ref: str) -> list[tuple[str, str]]:
    """Docker's ``diff``: (kind, path) with kind A, C or D, in walk order."""
    record = service.get(ref)
    out: list[tuple[str, str]] = []
    changed_dirs: set[str] = set()
    with _layer_fds(service, record) as (upper, lowers):
        for node in fstree.walk(upper, ".", ".", skip=_skip_init, overlay=True):
            if node.name == ".":
                continue
            path = "/" + node.name
            below = None if is_whiteout(node) else _below(lowers, path)
            if is_whiteout(node) or (node.opaque and below is not None):
                kind = "D"
            elif below is None:
                kind = "A"
            elif _same_dir(node, below):
                continue  # copied up only because something below it changed
            else:
                kind = "C"
            if node.kind == DIR and not is_whiteout(node):
                changed_dirs.add(path)
            parent = posixpath.dirname(path)
            if kind in "AD" and parent != "/" and parent not in changed_dirs:
                out.append(("C", parent))
                changed_dirs.add(parent)
            out.append((kind, path))
    return out


def _same_dir(node: fstree.Node, below: os.stat_result | None) -> bool:
    """A directory copied up only because something below it changed."""
    return (node.kind == DIR and not node.opaque and below is not None
            and stat.S_ISDIR(below.st_mode)
            and (node.mode, node.uid, node.gid) == (stat.S_IMODE(below.st_mode),
                                                    below.st_uid, below.st_gid))


def layer_nodes(upper_fd: int, lowers: list[int]) -> Iterator[fstree.Node]:
    """The upper dir as an OCI layer: whiteouts become ``.wh.<name>`` files,
    opaque directories get a ``.wh..wh..opq`` entry; directories that only
    hold the way to a change come only with that change (an unchanged
    container makes an empty layer)."""
    pending: list[fstree.Node] = []
    for node in fstree.walk(upper_fd, ".", ".", skip=_skip_init, overlay=True):
        if node.name == ".":
            continue
        while pending and not node.name.startswith(pending[-1].name + "/"):
            pending.pop()
        if node.kind == DIR and _same_dir(node, _below(lowers, "/" + node.name)):
            pending.append(node)
            continue
        yield from pending
        pending.clear()
        if is_whiteout(node):
            parent, leaf = posixpath.split(node.name)
            yield fstree.Node(posixpath.join(parent, WHITEOUT + leaf), REG, 0o600,
                              node.uid, node.gid, node.mtime_ns)
            continue
        yield node
        if node.kind == DIR and node.opaque:
            yield fstree.Node(posixpath.join(node.name, OPAQUE), REG, 0o600, node.uid,
                              node.gid, node.mtime_ns)


@contextlib.contextmanager
def opened(service: ContainerService, record: ContainerRecord) -> Iterator[tuple[int,
                                                                                list[int]]]:
    """Fds of the container's upper dir and lower layer dirs (top first)."""
    with _layer_fds(service, record) as fds:
        yield fds


@contextlib.contextmanager
def _layer_fds(service: ContainerService, record: ContainerRecord) -> Iterator[tuple[int,
                                                                                    list[int]]]:
    """A VM's writable layer is on its disk: read through vmfiles."""
    dirs = layer_dirs(service, record)
    if record.isolation != "vm":
        with _opened(dirs) as fds:
            yield fds
        return
    from isobox.engine import fsaccess, vmfiles

    with fsaccess.private_mounts(), vmfiles.upper_view(service, record) as upper, \
            _opened(LayerDirs(upper, dirs.lowers)) as fds:
        yield fds


def opened_dirs(dirs: LayerDirs) -> contextlib.AbstractContextManager[tuple[int, list[int]]]:
    """Fds of ``dirs`` (upper, lowers top first), closed on exit."""
    return _opened(dirs)
