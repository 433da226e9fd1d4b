"""cgroup v1 cpuset controller: cpus and memory nodes, and seeding new cgroups."""

from __future__ import annotations

import os

from isobox.cgroups import _fs

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "cpuset"


def wants(resources: Resources) -> bool:
    c = resources.cpu
    return c is not None and bool(c.cpus or c.mems)


def apply(path: str, resources: Resources) -> None:
    c = resources.cpu
    if c is None:
        return
    # mems first: a cpuset needs both before tasks can join, and cpus may be validated
    # against the memory nodes on some kernels.
    if c.mems:
        _fs.write(path, "cpuset.mems", c.mems)
    if c.cpus:
        _fs.write(path, "cpuset.cpus", c.cpus)


def seed(mountpoint: str, path: str) -> None:
    """Copy cpuset.cpus/mems down from the parent into each empty cgroup on the way
    to ``path`` (a new v1 cpuset starts empty, and no task can join an empty one)."""
    parent = mountpoint
    for part in path.strip("/").split("/"):
        cur = os.path.join(parent, part)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if _fs.read_opt(cur, name) == "":
                value = _fs.read_opt(parent, name)
                if value:
                    _fs.write(cur, name, value)
        parent = cur


def stats(path: str) -> dict[str, Any]:
    return {}
