"""``stats``: the container's usage from its cgroup, as the task API reports it."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

UNLIMITED = 1 << 62  # cgroup limits at or above this mean "max"


def summarize(raw: dict[str, Any], guest_memory: int) -> dict[str, int]:
    """From the cgroup manager's runc-shaped stats: memory without the inactive
    file cache (as Docker counts it), the guest's memory as the limit of an
    unlimited container (the VM's size is the real limit)."""
    memory = raw.get("memory") or {}
    usage = memory.get("usage") or {}
    counters = memory.get("raw") or {}
    inactive = counters.get("inactive_file", counters.get("total_inactive_file", 0))
    used = int(usage.get("usage") or 0)
    limit = int(usage.get("limit") or 0)
    if guest_memory and (limit <= 0 or limit >= UNLIMITED or limit > guest_memory):
        limit = guest_memory
    return {
        "memory_usage": max(0, used - int(inactive or 0)),
        "memory_limit": limit,
        "cpu_usage_ns": int(((raw.get("cpu") or {}).get("usage") or {}).get("total") or 0),
        "pids": int((raw.get("pids") or {}).get("current") or 0),
    }
