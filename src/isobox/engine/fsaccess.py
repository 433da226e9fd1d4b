"""A container's file system, reached from the host without trusting it.

Everything here hands out a directory fd of the container's ``/``; callers
resolve every path below it with ``openat2(RESOLVE_IN_ROOT)`` or walk it
with ``O_NOFOLLOW`` fds (``fstree``), so no symlink of the container can lead
to a host file.

- A running (or paused) container: ``/proc/<pid>/root`` of its init, that
  is the container's own view, with its volumes, bind mounts and tmpfs (as
  ``docker cp`` sees them). The pid is checked to be in the container's
  cgroup after the open, so a recycled pid cannot hand out a host root.
  ``with_volumes=False`` (export) takes the rootfs the monitor mounted on
  ``D/bundle/rootfs`` instead: the image and writable layer only.
- A stopped container: its snapshot mounted for the moment on a fresh
  ``D/mnt-*`` directory (with its bind mounts and volumes when asked), in a
  private mount namespace that this process leaves again afterwards: the
  mounts can never outlive the command, even if it is killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine import live
from isobox.errors import Conflict, IsoboxError, NotFound

if TYPE_CHECKING:
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True)
class Root:
    fd: int                   #: O_PATH fd of the container's "/" (owned by the context)
    record: ContainerRecord
    running: bool


@contextlib.contextmanager
def container_root(service: ContainerService, ref: str, *, with_volumes: bool = True,
                   writable: bool = False) -> Iterator[Root]:
    """``writable``: the caller writes (cp into the container)."""
    record = service.get(ref)
    status = record.state["Status"]
    if status == "restarting":
        raise Conflict(f"Container {record.id} is restarting, wait until the container is "
                       "running")
    if record.isolation == "vm":
        with _vm_root(service, record, with_volumes, writable) as root:
            yield root
        return
    if status in ("running", "paused"):
        fd = _proc_root(service, record) if with_volumes else _bundle_rootfs(service, record)
        try:
            yield Root(fd, record, True)
        finally:
            os.close(fd)
        return
    with mounted_snapshot(service, record, with_volumes=with_volumes) as path:
        fd = os.open(path, _DIR)
        try:
            yield Root(fd, record, False)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _vm_root(service: ContainerService, record: ContainerRecord, with_volumes: bool,
             writable: bool) -> Iterator[Root]:
    from isobox.engine import vmfiles

    running = record.state["Status"] in ("running", "paused")
    view = (vmfiles.staged_root(service, record) if writable
            else vmfiles.root_view(service, record, with_volumes=with_volumes))
    with view as path:
        fd = os.open(path, _DIR)
        try:
            yield Root(fd, record, running)
        finally:
            os.close(fd)


def unmount_quietly(path: str) -> None:
    from isobox.images.snapshots import unmount

    with contextlib.suppress(OSError, IsoboxError):
        unmount(path, detach=True)


def _proc_root(service: ContainerService, record: ContainerRecord) -> int:
    pid = int(record.state.get("Pid") or 0)
    try:
        fd = os.open(f"/proc/{pid}/root", _DIR) if pid > 0 else -1
    except OSError:
        fd = -1
    if fd >= 0 and pid in live.pids(service, record):
        return fd
    if fd >= 0:
        os.close(fd)
    raise Conflict(f"Container {record.id} is not running")


def _bundle_rootfs(service: ContainerService, record: ContainerRecord) -> int:
    path = os.path.join(service.dir(record.id), "bundle", "rootfs")
    fd = os.open(path, _DIR)
    if os.stat(path).st_dev == os.stat(os.path.dirname(path)).st_dev:
        os.close(fd)  # not mounted (any more): the container stopped meanwhile
        raise Conflict(f"Container {record.id} is not running")
    return fd


@contextlib.contextmanager
def private_mounts() -> Iterator[None]:
    """Run the body in a new mount namespace (slave of the host's), then
    return to the original one, restoring the working directory. Where the
    process cannot unshare (several threads), the body runs in place."""
    from isobox.linux import libc
    from isobox.linux.mounts import MS_REC, MS_SLAVE
    from isobox.linux.namespaces import CLONE_NEWNS

    original = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        unshared = True
        try:
            libc.unshare(CLONE_NEWNS)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            unshared = False
        if not unshared:
            yield
            return
        try:
            libc.mount(None, "/", None, MS_REC | MS_SLAVE)
            yield
        finally:
            libc.setns(original, CLONE_NEWNS)
            os.fchdir(cwd)
    finally:
        os.close(original)
        os.close(cwd)


@contextlib.contextmanager
def mounted_snapshot(service: ContainerService, record: ContainerRecord, *,
                     with_volumes: bool) -> Iterator[str]:
    """The stopped container's file system on a temporary directory."""
    from isobox.images.snapshots import mount_all, unmount

    try:
        mounts = service.images.snapshots.mounts(record.snapshot)
    except NotFound:
        raise NotFound(f"container {record.id} has no file system (snapshot "
                       f"{record.snapshot} is missing)") from None
    target = tempfile.mkdtemp(prefix="mnt-", dir=service.dir(record.id))
    stacked: list[str] = []
    try:
        with private_mounts():
            try:
                mount_all(mounts, target)
                stacked.append(target)
                if with_volumes:
                    stacked += mount_binds(live.bundle_spec(service, record), target)
                yield target
            finally:
                for path in reversed(stacked):
                    with contextlib.suppress(OSError, IsoboxError):
                        unmount(path, detach=True)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(target)


def mount_binds(spec: dict[str, Any], target: str) -> list[str]:
    """Bind the spec's bind mounts (volumes, binds, hosts files) where their
    destinations already exist in the rootfs; resolved inside it."""
    from isobox.linux import libc
    from isobox.linux.mounts import MS_BIND, MS_REC, fd_path, resolve_in_root

    done: list[str] = []
    root_fd = os.open(target, _DIR)
    try:
        for m in spec.get("mounts") or []:
            if m.get("type") != "bind" and "bind" not in (m.get("options") or []) \
                    and "rbind" not in (m.get("options") or []):
                continue
            source, dest = m.get("source") or "", m.get("destination") or ""
            if not source.startswith("/") or not dest.startswith("/"):
                continue
            try:
                fd = resolve_in_root(root_fd, dest)
            except OSError:
                continue  # the container never ran: no mount point yet
            try:
                where = fd_path(fd)
                libc.mount(source, where, None, MS_BIND | MS_REC)
                # The mount sits on the inode the fd names: find its path to undo it.
                done.append(os.path.join(target, dest.lstrip("/")))
            except OSError:
                continue
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return done
