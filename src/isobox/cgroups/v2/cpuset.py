"""cgroup v2 cpuset controller: cpuset.cpus and cpuset.mems (same files as v1)."""

from __future__ import annotations

from typing import Any

from isobox.cgroups.v1.cpuset import apply, wants

NAME = "cpuset"

__all__ = ["NAME", "apply", "stats", "wants"]


def stats(path: str) -> dict[str, Any]:
    return {}
