"""The virtio-serial port the host talks to, found by the name the host gave it."""

from __future__ import annotations

import os
import time

from isobox.errors import NotFound

PORT_WAIT = 30.0  # seconds: the port's name arrives after the driver probed it


def find_port(name: str, sys_root: str = "/sys", dev_root: str = "/dev") -> str | None:
    """/dev/vportXpY whose /sys/class/virtio-ports/vportXpY/name is name, or None."""
    ports = os.path.join(sys_root, "class", "virtio-ports")
    try:
        entries = sorted(os.listdir(ports))
    except FileNotFoundError:
        return None
    for entry in entries:
        try:
            with open(os.path.join(ports, entry, "name")) as f:
                if f.read().strip() == name:
                    return os.path.join(dev_root, entry)
        except OSError:
            continue
    return None


def open_port(name: str, timeout: float | None = None) -> int:
    """The port, open for reading and writing, non-blocking. The host side
    need not be connected yet (see :mod:`isobox.agent.connection`)."""
    deadline = time.monotonic() + (PORT_WAIT if timeout is None else timeout)
    while True:
        path = find_port(name)
        if path is not None:
            try:
                return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            except FileNotFoundError:
                pass  # sysfs has it, devtmpfs not yet
        if time.monotonic() > deadline:
            raise NotFound(f"no virtio-serial port named {name!r}")
        time.sleep(0.02)
