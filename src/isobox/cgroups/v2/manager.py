"""The cgroup v2 manager: one directory in the unified hierarchy."""

from __future__ import annotations

import os

from isobox.cgroups import _base, _fs
from isobox.cgroups.v2 import cpu, cpuset, devices, freezer, hugetlb, io, memory, pids, unified
from isobox.errors import InvalidArgument, IsoboxError
from isobox.linux.lazylog import get_logger

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.cgroups._protocols import Controller
    from isobox.oci.runtime_spec import Resources

_log = get_logger(__name__)

#: The controllers set() drives, in order (unified is applied last, to override).
CONTROLLERS: tuple[Controller, ...] = (cpuset, memory, cpu, pids, io, hugetlb)

#: Controllers create() enables in each ancestor's cgroup.subtree_control.
WANTED = frozenset({"cpuset", "cpu", "io", "memory", "pids", "hugetlb"})


class V2Manager:
    """A cgroup in the unified hierarchy mounted at ``root``."""

    version = 2

    def __init__(self, path: str, root: str = "/sys/fs/cgroup", *,
                 freeze_timeout: float = 10.0, busy_timeout: float = 5.0) -> None:
        self.path = _base.normalize_path(path)
        self.root = root
        self.dir = _base.join(root, self.path)
        self._freeze_timeout = freeze_timeout
        self._busy_timeout = busy_timeout
        self._created: list[str] = []

    def host_paths(self) -> dict[str, str]:
        return {"": self.dir}

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def _ancestors(self) -> list[str]:
        """The root and every cgroup between it and ours, outermost first."""
        out = [self.root]
        for part in self.path.strip("/").split("/")[:-1]:
            out.append(os.path.join(out[-1], part))
        return out

    def _enable(self, parent: str) -> None:
        available = (_fs.read_opt(parent, "cgroup.controllers") or "").split()
        enabled = set((_fs.read_opt(parent, "cgroup.subtree_control") or "").split())
        want = [c for c in available if c in WANTED and c not in enabled]
        if not want:
            return
        try:
            _fs.write(parent, "cgroup.subtree_control", " ".join("+" + c for c in want))
            return
        except IsoboxError:
            pass
        for c in want:  # one at a time, so one refusal does not block the rest
            try:
                _fs.write(parent, "cgroup.subtree_control", "+" + c)
            except IsoboxError as exc:
                _log.warning("cannot enable the %s controller below %s: %s", c, parent, exc)

    def create(self) -> None:
        self._created.extend(c for c in _fs.makedirs(self.dir) if c != self.dir)
        for parent in self._ancestors():
            self._enable(parent)

    def apply(self, pid: int) -> None:
        if pid <= 0:
            raise InvalidArgument(f"invalid pid {pid}")
        _fs.attach(self.dir, pid)

    def enter(self, *, cgroup2: bool = True) -> None:
        """Move the calling process into this cgroup (nothing to do when it
        started there: ``cgroup2`` False, CLONE_INTO_CGROUP). Writing
        cgroup.procs takes the kernel's cgroup_threadgroup_rwsem for writing,
        which can wait for an RCU grace period: starting the process in the
        cgroup takes only its read side."""
        if cgroup2:
            _fs.enter(self.dir, "cgroup.procs")

    def cgroup2_dir(self) -> str | None:
        return self.dir

    def controllers(self) -> set[str]:
        """The controllers enabled for this cgroup (its parent's subtree_control)."""
        parent = os.path.dirname(self.dir)
        return set((_fs.read_opt(parent, "cgroup.subtree_control") or "").split())

    def set(self, resources: Resources) -> None:
        _base.require(list(CONTROLLERS), self.controllers(), resources,
                      f"in {self.dir} (see cgroup.subtree_control of its parent)")
        for ctrl in CONTROLLERS:
            if ctrl.wants(resources):
                ctrl.apply(self.dir, resources)
        devices.apply(self.dir, resources)
        if resources.unified:
            unified.apply(self.dir, resources.unified)

    def pids(self) -> list[int]:
        return sorted(_fs.procs(self.dir)) if os.path.isdir(self.dir) else []

    def freeze(self) -> None:
        freezer.freeze(self.dir, self._freeze_timeout)

    def thaw(self) -> None:
        freezer.thaw(self.dir)

    def is_frozen(self) -> bool:
        return os.path.isdir(self.dir) and freezer.is_frozen(self.dir)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if os.path.isdir(self.dir):
            for ctrl in CONTROLLERS:
                _base.merge(out, ctrl.stats(self.dir))
        return out

    def destroy(self) -> None:
        _fs.remove_tree(self.dir, self._busy_timeout)
        for d in reversed(self._created):
            _fs.remove_if_empty(d)
        self._created.clear()
