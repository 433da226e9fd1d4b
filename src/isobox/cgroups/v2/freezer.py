"""cgroup v2 freezer: cgroup.freeze, with cgroup.events telling when it is done."""

from __future__ import annotations

import time

from isobox.cgroups import _fs
from isobox.errors import Unavailable


def _frozen_event(path: str) -> bool:
    events = _fs.read_keyed(path, "cgroup.events") or {}
    return events.get("frozen") == 1


def freeze(path: str, timeout: float) -> None:
    """Write 1 to cgroup.freeze and wait until cgroup.events says "frozen 1"."""
    if not _fs.exists(path, "cgroup.freeze"):
        raise Unavailable(f"{path}/cgroup.freeze does not exist: the kernel has no "
                          "cgroup v2 freezer (needs Linux 5.2)")
    _fs.write(path, "cgroup.freeze", "1")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not _frozen_event(path):
        if time.monotonic() >= deadline:
            _fs.write(path, "cgroup.freeze", "0")
            raise Unavailable(f"cannot freeze {path}: not frozen after {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def thaw(path: str) -> None:
    if not _fs.exists(path, "cgroup.freeze"):
        raise Unavailable(f"{path}/cgroup.freeze does not exist: no cgroup v2 freezer")
    _fs.write(path, "cgroup.freeze", "0")


def is_frozen(path: str) -> bool:
    return _fs.read_opt(path, "cgroup.freeze") == "1" and _frozen_event(path)
