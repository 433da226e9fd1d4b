"""cgroup v1 cpu controller: shares, CFS quota/period/burst, idle, realtime."""

from __future__ import annotations

from isobox.cgroups import _fs
from isobox.errors import InvalidArgument

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


def apply(path: str, resources: Resources) -> None:
    c = resources.cpu
    if c is None:
        return
    if c.shares:
        _fs.write(path, "cpu.shares", str(c.shares))
        got = _fs.read_int(path, "cpu.shares")
        if got is not None and got != c.shares:
            raise InvalidArgument(
                f"cpu shares {c.shares} out of range: the kernel set {path}/cpu.shares to {got}")
    # A shorter period may be refused until the quota is lowered: retry after.
    period_pending = False
    if c.period:
        try:
            _fs.write(path, "cpu.cfs_period_us", str(c.period))
        except InvalidArgument:
            if not c.quota:
                raise
            period_pending = True
    if c.quota:
        _fs.write(path, "cpu.cfs_quota_us", str(c.quota if c.quota > 0 else -1))
        if period_pending:
            _fs.write(path, "cpu.cfs_period_us", str(c.period))
    if c.burst is not None:
        _fs.write(path, "cpu.cfs_burst_us", str(c.burst))
    if c.idle is not None:
        _fs.write(path, "cpu.idle", str(c.idle))
    if c.realtime_period:
        _fs.write(path, "cpu.rt_period_us", str(c.realtime_period))
    if c.realtime_runtime:
        _fs.write(path, "cpu.rt_runtime_us", str(c.realtime_runtime))


def stats(path: str) -> dict[str, Any]:
    st = _fs.read_keyed(path, "cpu.stat")
    if st is None:
        return {}
    return {"cpu": {"throttling": {
        "periods": st.get("nr_periods", 0),
        "throttledPeriods": st.get("nr_throttled", 0),
        "throttledTime": st.get("throttled_time", 0),
    }}}
