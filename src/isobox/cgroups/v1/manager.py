"""The cgroup v1 manager: the same relative path in every mounted hierarchy."""

from __future__ import annotations

import os

from isobox.cgroups import _base, _fs
from isobox.cgroups.v1 import (
    blkio,
    cpu,
    cpuacct,
    cpuset,
    devices,
    freezer,
    hugetlb,
    memory,
    pids,
)
from isobox.errors import InvalidArgument, Unavailable

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.cgroups._protocols import Controller
    from isobox.oci.runtime_spec import Resources

#: The controllers set() drives, in runc's order.
CONTROLLERS: tuple[Controller, ...] = (
    cpuset, devices, memory, cpu, cpuacct, pids, blkio, hugetlb,
)


class V1Manager:
    """A cgroup in every v1 hierarchy (named ones such as name=systemd included)
    and, on a hybrid host, in the cgroup2 hierarchy mounted beside them."""

    version = 1

    def __init__(self, path: str, hierarchies: list[_base.Hierarchy], *,
                 freeze_timeout: float = 10.0, busy_timeout: float = 5.0) -> None:
        self.path = _base.normalize_path(path)
        self._dirs: dict[str, str] = {}
        self._by_controller: dict[str, str] = {}
        self._cpuset_mount: str | None = None
        for h in hierarchies:
            key = h.name
            if key in self._dirs:
                continue
            self._dirs[key] = _base.join(h.mountpoint, self.path)
            if "cpuset" in h.controllers:
                self._cpuset_mount = h.mountpoint
            for ctrl in h.controllers:
                self._by_controller.setdefault(ctrl, self._dirs[key])
        if not self._by_controller:
            raise Unavailable("no cgroup v1 hierarchy is mounted")
        self._freeze_timeout = freeze_timeout
        self._busy_timeout = busy_timeout
        self._created: list[str] = []

    def host_paths(self) -> dict[str, str]:
        return dict(self._dirs)

    def controller_path(self, name: str) -> str | None:
        """The host directory of this cgroup in the hierarchy of controller ``name``."""
        return self._by_controller.get(name)

    def exists(self) -> bool:
        return any(os.path.isdir(d) for d in self._dirs.values())

    def create(self) -> None:
        for d in self._dirs.values():
            self._created.extend(c for c in _fs.makedirs(d) if c != d)
        if self._cpuset_mount is not None:
            cpuset.seed(self._cpuset_mount, self.path)

    def apply(self, pid: int) -> None:
        if pid <= 0:
            raise InvalidArgument(f"invalid pid {pid}")
        for d in self._dirs.values():
            _fs.attach(d, pid)

    def enter(self, *, cgroup2: bool = True) -> None:
        """Move the calling process, which must be single-threaded (a fork's
        child), into this cgroup.

        Each v1 hierarchy through its ``tasks`` file with pid 0: moving the
        writer's own thread is the one move for which the kernel skips taking
        cgroup_threadgroup_rwsem for writing, whose first taker in a while
        waits for an RCU grace period (10-25 ms on these hosts, where apply()
        paid it). The cgroup2 hierarchy of a hybrid host has no such file
        (cgroup.threads moves a thread only inside a threaded subtree): it goes
        through cgroup.procs, unless ``cgroup2`` is False because the process
        started there (CLONE_INTO_CGROUP)."""
        for key, d in self._dirs.items():
            if key:
                _fs.enter(d, "tasks")
            elif cgroup2:
                _fs.enter(d, "cgroup.procs")

    def cgroup2_dir(self) -> str | None:
        """This cgroup's directory in the cgroup2 hierarchy of a hybrid host."""
        return self._dirs.get("")

    def set(self, resources: Resources) -> None:
        if resources.unified:
            raise InvalidArgument("unified resources need cgroup v2 "
                                  f"(this host uses cgroup v1): {sorted(resources.unified)}")
        _base.require(list(CONTROLLERS), set(self._by_controller), resources,
                      "on this cgroup v1 host")
        for ctrl in CONTROLLERS:
            d = self._by_controller.get(ctrl.NAME)
            if d is not None and ctrl.wants(resources):
                ctrl.apply(d, resources)

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self._dirs.values():
            found |= _fs.procs(d)
        return sorted(found)

    def _freezer(self) -> str:
        d = self._by_controller.get(freezer.NAME)
        if d is None:
            raise Unavailable("the cgroup v1 freezer controller is not mounted")
        return d

    def freeze(self) -> None:
        freezer.freeze(self._freezer(), self._freeze_timeout)

    def thaw(self) -> None:
        freezer.thaw(self._freezer())

    def is_frozen(self) -> bool:
        d = self._by_controller.get(freezer.NAME)
        return d is not None and os.path.isdir(d) and freezer.is_frozen(d)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for ctrl in CONTROLLERS:
            d = self._by_controller.get(ctrl.NAME)
            if d is not None and os.path.isdir(d):
                _base.merge(out, ctrl.stats(d))
        return out

    def destroy(self) -> None:
        for d in self._dirs.values():
            _fs.remove_tree(d, self._busy_timeout)
        for d in reversed(self._created):
            _fs.remove_if_empty(d)
        self._created.clear()
