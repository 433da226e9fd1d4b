"""cgroup v2 cpu controller: cpu.weight (from shares), cpu.max, cpu.max.burst, cpu.idle."""

from __future__ import annotations

from isobox.cgroups import _fs
from isobox.errors import InvalidArgument, Unavailable

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "cpu"


def wants(resources: Resources) -> bool:
    c = resources.cpu
    if c is None:
        return False
    return bool(c.shares or c.quota or c.period or c.realtime_runtime or c.realtime_period
                or c.burst is not None or c.idle is not None)


def shares_to_weight(shares: int) -> int:
    """runc's map of cgroup v1 cpu.shares [2, 262144] onto cpu.weight [1, 10000]."""
    if shares <= 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def max_value(quota: int | None, period: int | None) -> str:
    """cpu.max text: "<quota|max> [period]"; a quota of 0 or below is "max"."""
    text = str(quota) if quota and quota > 0 else "max"
    return f"{text} {period}" if period else text


def apply(path: str, resources: Resources) -> None:
    c = resources.cpu
    if c is None:
        return
    if c.realtime_runtime or c.realtime_period:
        raise Unavailable("realtime CPU limits (cpu.rt_*) need cgroup v1")
    if c.idle is not None:
        _fs.write(path, "cpu.idle", str(c.idle))
    if c.shares:
        weight = shares_to_weight(c.shares)
        if not 1 <= weight <= 10000:
            raise InvalidArgument(f"cpu shares {c.shares} out of range [2, 262144]")
        _fs.write(path, "cpu.weight", str(weight))
    if c.burst is not None:
        _fs.write(path, "cpu.max.burst", str(c.burst))
    if c.quota or c.period:
        _fs.write(path, "cpu.max", max_value(c.quota, c.period))


def stats(path: str) -> dict[str, Any]:
    st = _fs.read_keyed(path, "cpu.stat")
    if st is None:
        return {}
    return {"cpu": {
        "usage": {"total": st.get("usage_usec", 0) * 1000,
                  "kernel": st.get("system_usec", 0) * 1000,
                  "user": st.get("user_usec", 0) * 1000},
        "throttling": {"periods": st.get("nr_periods", 0),
                       "throttledPeriods": st.get("nr_throttled", 0),
                       "throttledTime": st.get("throttled_usec", 0) * 1000},
    }}
