"""``cp`` into a running container, the guest's part: look a path up in the
container's root filesystem, and extract a tar stream into a directory of
it, with the same code (:mod:`isobox.images.fstree`) and the same rules
(paths resolved in the root, no symlink followed out of it) as the host
uses for a process-isolated container.

The extraction runs in a fork of the agent, as a process with a stream:
the host sends the tar on its stdin, and it exits 0 after writing the
bytes copied on stdout, or 1 with the error on stderr.
"""

from __future__ import annotations

import os
import stat

from isobox.agent.codes import describe
from isobox.images import fstree
from isobox.linux.guard import close_fds_except
from isobox.linux.inherit import reset_signals

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.agent.paths import Paths

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def kind_of(st: os.stat_result | None) -> str | None:
    if st is None:
        return None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def stat_path(paths: Paths, path: str, follow: bool) -> dict[str, object]:
    """{"kind": "dir"|"file"|"other"|None, "path": the path found (after a
    final symlink when ``follow``)} of ``path`` in the container's root."""
    root = os.open(paths.rootfs, _OPEN_DIR)
    try:
        try:
            fd, _leaf, st, found = fstree.resolve(root, path, follow)
        except (FileNotFoundError, NotADirectoryError):
            return {"kind": None, "path": path, "parent_missing": True}
        os.close(fd)
    finally:
        os.close(root)
    return {"kind": kind_of(st), "path": found, "parent_missing": False}


def start_extract(paths: Paths, stdio: tuple[int, int, int], directory: str,
                  owner: str | tuple[int, int]) -> int:
    """The pid of a child extracting its stdin (a tar stream) into
    ``directory`` (a symlink to it is followed, inside the root)."""
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        close_fds_except({0, 1, 2})  # the agent's end of our stdin above all: EOF must come
        reset_signals()
        code = _extract(paths.rootfs, directory, owner)
    except BaseException as exc:
        os.write(2, f"{describe(exc)}\n".encode())
    os._exit(code)


def _extract(rootfs: str, directory: str, owner: str | tuple[int, int]) -> int:
    root = os.open(rootfs, _OPEN_DIR)
    try:
        fd, leaf, st = fstree.locate(root, directory, True)
    finally:
        os.close(root)
    try:
        if st is None or not stat.S_ISDIR(st.st_mode):
            os.write(2, f"extraction point is not a directory: {directory}\n".encode())
            return 1
        target = os.open(leaf, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        sink = fstree.Extractor(target, owner=owner)
        with os.fdopen(0, "rb", closefd=False) as tar:
            for node in fstree.tar_nodes(tar):
                sink.add(node)
        sink.finish()
    finally:
        os.close(target)
    os.write(1, f"{sink.copied}\n".encode())
    return 0
