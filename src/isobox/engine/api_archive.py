"""``/containers/{id}/archive`` for the Engine API: the stat of a path in
a container as Docker's ``X-Docker-Container-Path-Stat`` carries it (the
docker CLI plans ``cp`` from it), resolved inside the container like every
``cp`` path (``engine/copy.py``)."""

from __future__ import annotations

import os
import stat
import time
from typing import TYPE_CHECKING, Any

from isobox.engine import copy, fsaccess
from isobox.errors import NotFound
from isobox.images import fstree

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

# Go's os.FileMode type bits.
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20


def go_mode(mode: int) -> int:
    out = mode & 0o777
    kinds = ((stat.S_ISDIR, _GO_DIR), (stat.S_ISLNK, _GO_SYMLINK),
             (stat.S_ISFIFO, _GO_PIPE), (stat.S_ISSOCK, _GO_SOCKET),
             (stat.S_ISBLK, _GO_DEVICE), (stat.S_ISCHR, _GO_DEVICE | _GO_CHARDEV))
    for test, bit in kinds:
        if test(mode):
            out |= bit
    if mode & stat.S_ISUID:
        out |= _GO_SETUID
    if mode & stat.S_ISGID:
        out |= _GO_SETGID
    if mode & stat.S_ISVTX:
        out |= _GO_STICKY
    return out


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e9):09d}Z"


def stat_path(service: ContainerService, ref: str, path: str) -> dict[str, Any]:
    """Docker's ``container.PathStat`` of ``path`` (a final symlink not
    followed; ``linkTarget`` is where it leads, inside the container)."""
    with fsaccess.container_root(service, ref) as root:
        absolute = copy._in_container(path)
        try:
            pfd, leaf, st = fstree.locate(root.fd, absolute, False)
        except OSError:
            raise NotFound(f"Could not find the file {path} in container {ref}") from None
        try:
            if st is None:
                raise NotFound(f"Could not find the file {path} in container {ref}")
            link = ""
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(leaf, dir_fd=pfd)
                link = os.path.normpath(os.path.join(os.path.dirname(absolute), target))
        finally:
            os.close(pfd)
    return {"name": os.path.basename(absolute) or "/", "size": st.st_size,
            "mode": go_mode(st.st_mode), "mtime": _rfc3339(st.st_mtime), "linkTarget": link}
