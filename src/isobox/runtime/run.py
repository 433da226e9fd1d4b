"""``run``: create, start and (unless detached) wait, then delete."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import contextlib

from isobox.linux import console
from isobox.runtime import foreground
from isobox.runtime.create import create, load_bundle
from isobox.runtime.lifecycle import delete, start


def run(root: str, container_id: str, bundle: str, *, detach: bool = False,
        pid_file: str | None = None, console_socket: str | None = None,
        no_pivot: bool = False, preserve_fds: int = 0, keep: bool = False,
        systemd_cgroup: bool = False) -> int:
    spec = load_bundle(bundle)
    terminal = bool(spec.process and spec.process.terminal)
    with contextlib.ExitStack() as stack:
        proxy: socket.socket | None = None
        target: str | socket.socket | None = console_socket
        if terminal and console_socket is None and not detach:
            proxy, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            stack.callback(proxy.close)
            stack.callback(theirs.close)
            target = theirs
        container = create(root, container_id, bundle, pid_file=pid_file,
                           console_socket=target, no_pivot=no_pivot,
                           preserve_fds=preserve_fds, systemd_cgroup=systemd_cgroup)
        try:
            start(root, container_id)
        except BaseException:
            delete(root, container_id, force=True)
            raise
        if detach:
            return 0
        master = console.recv_fd(proxy)[0] if proxy is not None else None
        try:
            return foreground.wait(container.record.pid, master)
        finally:
            if not keep:
                delete(root, container_id, force=True)
    raise AssertionError("unreachable")
