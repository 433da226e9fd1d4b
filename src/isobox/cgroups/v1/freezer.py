"""cgroup v1 freezer controller: freezer.state FROZEN / THAWED."""

from __future__ import annotations

import time

from isobox.cgroups import _fs
from isobox.errors import Unavailable

NAME = "freezer"
STATE = "freezer.state"


def freeze(path: str, timeout: float) -> None:
    """Freeze and wait until FROZEN; thaw back and raise if it stays FREEZING."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        if attempt % 50 == 0:
            # New tasks may keep arriving: a short thaw helps the next try (as runc).
            _fs.write(path, STATE, "THAWED")
            time.sleep(0.01)
        _fs.write(path, STATE, "FROZEN")
        state = _fs.read(path, STATE)
        if state == "FROZEN":
            return
        if state != "FREEZING":
            raise Unavailable(f"{path}/{STATE} is {state!r} after writing FROZEN")
        if time.monotonic() >= deadline:
            _fs.write(path, STATE, "THAWED")
            raise Unavailable(f"cannot freeze {path}: still FREEZING after {timeout:g}s")
        time.sleep(0.001 if attempt < 25 else 0.01)


def thaw(path: str) -> None:
    _fs.write(path, STATE, "THAWED")


def is_frozen(path: str) -> bool:
    return _fs.read(path, STATE) == "FROZEN"
