"""cgroup v1 cpuacct controller: CPU usage statistics only (nothing to set)."""

from __future__ import annotations

import os

from isobox.cgroups import _fs

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "cpuacct"
_NS = 1_000_000_000


def wants(resources: Resources) -> bool:
    return False


def apply(path: str, resources: Resources) -> None:
    return None


def stats(path: str) -> dict[str, Any]:
    total = _fs.read_int(path, "cpuacct.usage")
    if total is None:
        return {}
    percpu_text = _fs.read_opt(path, "cpuacct.usage_percpu") or ""
    percpu = [int(v) for v in percpu_text.split() if v.isdigit()]
    user = _fs.read_int(path, "cpuacct.usage_user")
    kernel = _fs.read_int(path, "cpuacct.usage_sys")
    if user is None or kernel is None:
        # cpuacct.stat counts clock ticks.
        ticks = _fs.read_keyed(path, "cpuacct.stat") or {}
        hz = os.sysconf("SC_CLK_TCK") or 100
        user = ticks.get("user", 0) * _NS // hz
        kernel = ticks.get("system", 0) * _NS // hz
    return {"cpu": {"usage": {"total": total, "percpu": percpu, "kernel": kernel, "user": user}}}
