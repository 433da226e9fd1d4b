"""cgroup v2 cpuset controller: cpuset.cpus and cpuset.mems (same files as v1)."""

from __future__ import annotations

from isobox.cgroups.v1.cpuset import apply, wants

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

NAME = "cpuset"

__all__ = ["NAME", "apply", "stats", "wants"]


def stats(path: str) -> dict[str, Any]:
    return {}
