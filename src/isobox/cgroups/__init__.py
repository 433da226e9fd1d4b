"""cgroups: one Manager interface, with cgroup v1 and v2 implementations.

    mgr = new_manager("/isobox/<id>")     # v1 or v2, detected at run time
    mgr.create(); mgr.set(spec.linux.resources); mgr.apply(pid)
    ...
    mgr.destroy()

One module per controller under ``v1/`` and ``v2/``, each with an
``apply(path, resources)``. Import-light on purpose: this runs on every
container start and imports only the stdlib and ``isobox.errors``
(``isobox.oci`` only for type checking).
"""

from __future__ import annotations

import os

from isobox.cgroups._base import Hierarchy, hierarchies, normalize_path
from isobox.errors import InvalidArgument, Unavailable

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.cgroups._protocols import Manager
    from isobox.cgroups.v1.manager import V1Manager
    from isobox.cgroups.v2.manager import V2Manager

__all__ = [
    "Hierarchy",
    "Manager",
    "V1Manager",
    "V2Manager",
    "detect_version",
    "hierarchies",
    "new_manager",
    "normalize_path",
]


def detect_version(root: str = "/sys/fs/cgroup") -> int:
    """2 when ``root`` is itself a cgroup2 mount (it has cgroup.controllers), else 1."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2
    if not os.path.isdir(root):
        raise Unavailable(f"no cgroup filesystem at {root}")
    return 1


def new_manager(path: str, *, root: str = "/sys/fs/cgroup", version: int | None = None,
                mountinfo: str = "/proc/self/mountinfo") -> Manager:
    """The manager of cgroup ``path`` ("/isobox/<id>") for this host's cgroup version.

    ``root`` is where cgroup2 is mounted (v2, and version detection); v1
    hierarchies are found in ``mountinfo`` instead. Paths are relative to each
    hierarchy's root; ".." is refused with InvalidArgument.
    """
    if version is None:
        version = detect_version(root)
    # Only the implementation this host needs is imported (start-up time).
    if version == 2:
        from isobox.cgroups.v2.manager import V2Manager
        return V2Manager(path, root)
    if version == 1:
        from isobox.cgroups.v1.manager import V1Manager
        found = hierarchies(mountinfo)
        # On a hybrid host the cgroup2 mount beside the v1 ones is joined too (as runc).
        return V1Manager(path, [h for h in found if h.version == 1]
                         + [h for h in found if h.version == 2][:1])
    raise InvalidArgument(f"unknown cgroup version {version}: expected 1 or 2")


def __getattr__(name: str) -> Any:
    # V1Manager and V2Manager are imported on first use, not with the package.
    if name == "Manager":
        from isobox.cgroups._protocols import Manager
        return Manager
    if name == "V1Manager":
        from isobox.cgroups.v1.manager import V1Manager
        return V1Manager
    if name == "V2Manager":
        from isobox.cgroups.v2.manager import V2Manager
        return V2Manager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
