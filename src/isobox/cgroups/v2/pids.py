"""cgroup v2 pids controller: pids.max and pids.current (same files as v1)."""

from isobox.cgroups.v1.pids import NAME, apply, limit_value, stats, wants

__all__ = ["NAME", "apply", "limit_value", "stats", "wants"]
