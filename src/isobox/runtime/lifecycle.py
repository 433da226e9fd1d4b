"""``start``, ``kill``, ``delete``, ``pause`` and ``resume`` of a created container."""

from __future__ import annotations

import os
import signal
import time

from isobox.errors import Conflict, NotFound, Unavailable
from isobox.linux.lazylog import get_logger
from isobox.runtime.cgroup import manager_for
from isobox.runtime.hooks import run_hooks
from isobox.runtime.state import EXEC_FIFO, Container, Status

log = get_logger(__name__)


def start(root: str, container_id: str) -> Container:
    container = Container.load(root, container_id)
    status = container.status()
    if not status.can_start():
        if status is Status.STOPPED:
            raise Conflict("cannot start a container that has stopped")
        raise Conflict(f"cannot start an already {status} container")
    fifo_path = os.path.join(container.dir, EXEC_FIFO)
    try:
        # The init holds the fifo open for reading while it waits; with no
        # reader left, opening for writing fails at once (ENXIO).
        fd = os.open(fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        raise Conflict("container process exited before start") from None
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    os.unlink(fifo_path)
    hooks = container.record.config.hooks
    if hooks is not None and hooks.poststart:
        run_hooks("poststart", hooks.poststart, container.oci_state(Status.RUNNING), fatal=False)
    return container


def signal_init(container: Container, sig: int) -> None:
    """Signal the container's init through a pidfd, so a recycled pid is never hit."""
    try:
        pidfd = os.pidfd_open(container.record.pid)
    except ProcessLookupError:
        raise Conflict("container not running") from None
    try:
        if not container.is_alive():
            raise Conflict("container not running")
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        raise Conflict("container not running") from None
    finally:
        os.close(pidfd)


def kill(root: str, container_id: str, sig: int, all_processes: bool = False) -> None:
    container = Container.load(root, container_id)
    status = container.status()
    if not status.can_kill():
        raise Conflict("container not running")
    if all_processes:
        _signal_all(container, sig)
    else:
        signal_init(container, sig)


def _signal_all(container: Container, sig: int) -> None:
    manager = manager_for(container.record)
    frozen = manager.exists() and manager.is_frozen()
    if not frozen and manager.exists():
        manager.freeze()  # no new forks while we walk the list
    try:
        for pid in manager.pids() if manager.exists() else [container.record.pid]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    finally:
        if manager.exists() and (not frozen or sig == signal.SIGKILL):
            manager.thaw()


def wait_stopped(container: Container, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    manager = manager_for(container.record)
    while time.monotonic() < deadline:
        alive = container.is_alive()
        try:
            left = manager.pids() if manager.exists() else []
        except OSError:
            left = []
        if not alive and not left:
            return
        time.sleep(0.01)
    raise Unavailable(f"container {container.id} did not stop within {timeout}s")


def delete(root: str, container_id: str, force: bool = False) -> None:
    try:
        container = Container.load(root, container_id)
    except NotFound:
        if force:
            return
        raise
    status = container.status()
    if status in (Status.RUNNING, Status.PAUSED) and not force:
        raise Conflict(f"cannot delete container {container_id} that is not stopped: {status}")
    if status is not Status.STOPPED or not _own_pid_namespace(container):
        # Without a pid namespace of its own, children can outlive init.
        _signal_all(container, signal.SIGKILL)
        wait_stopped(container)
    # With one, the kernel killed the rest with init; destroy() waits for
    # the last of them to leave the cgroup.
    manager_for(container.record).destroy()
    hooks = container.record.config.hooks
    if hooks is not None and hooks.poststop:
        run_hooks("poststop", hooks.poststop, container.oci_state(Status.STOPPED), fatal=False)
    container.remove_dir()


def _own_pid_namespace(container: Container) -> bool:
    linux = container.record.config.linux
    return any(ns.type == "pid" and not ns.path for ns in (linux.namespaces if linux else None) or ())


def pause(root: str, container_id: str) -> None:
    container = Container.load(root, container_id)
    status = container.status()
    if not status.can_pause():
        raise Conflict(f"cannot pause a container that is {status}")
    manager_for(container.record).freeze()


def resume(root: str, container_id: str) -> None:
    container = Container.load(root, container_id)
    if container.status() is not Status.PAUSED:
        raise Conflict("container not paused")
    manager_for(container.record).thaw()
