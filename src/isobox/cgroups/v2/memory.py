"""cgroup v2 memory controller: memory.max, memory.low, memory.swap.max."""

from __future__ import annotations

from isobox.cgroups import _fs
from isobox.errors import InvalidArgument
from isobox.linux.lazylog import get_logger

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "memory"
_log = get_logger(__name__)


def wants(resources: Resources) -> bool:
    m = resources.memory
    return m is not None and any(v is not None for v in (m.limit, m.reservation, m.swap))


def _text(value: int) -> str:
    """0 is "leave as is" (empty), -1 is "max"."""
    if value == 0:
        return ""
    return "max" if value == -1 else str(value)


def swap_value(swap: int, limit: int) -> int:
    """memory.swap.max from the spec's memory+swap total (runc's conversion)."""
    if limit == -1 and swap == 0:
        return -1  # unlimited memory, swap not given: both unlimited
    if swap in (-1, 0):
        return swap
    if limit in (0, -1):
        raise InvalidArgument("cannot set a swap limit without a memory limit")
    if swap < limit:
        raise InvalidArgument(f"memory+swap limit {swap} must be >= memory limit {limit}")
    return swap - limit


def apply(path: str, resources: Resources) -> None:
    m = resources.memory
    if m is None:
        return
    for what, value in (("limit", m.limit), ("swap", m.swap), ("reservation", m.reservation)):
        if value is not None and value < -1:
            raise InvalidArgument(f"invalid memory {what} {value}: must be -1 or >= 0")
    limit, swap = m.limit or 0, m.swap or 0
    swap_max = swap_value(swap, limit)
    text = _text(swap_max)
    if not text and swap_max == 0 and swap > 0:
        text = "0"  # memory+swap equal to memory: no swap
    if text:
        if _fs.exists(path, "memory.swap.max"):
            _fs.write(path, "memory.swap.max", text)
        elif text not in ("max", "0"):
            _log.warning("%s: swap accounting is off in this kernel; memory limited without "
                         "swap", path)
    if limit:
        _fs.write(path, "memory.max", _text(limit))
    if m.reservation:
        _fs.write(path, "memory.low", _text(m.reservation))
    if m.kernel or m.kernel_tcp:
        _log.warning("kernel memory limits are not supported by cgroup v2; ignored")
    if m.swappiness is not None and m.swappiness != -1:
        _log.warning("memory swappiness is not supported by cgroup v2; ignored")
    if m.disable_oom_killer:
        _log.warning("disabling the OOM killer is not supported by cgroup v2; ignored")


def stats(path: str) -> dict[str, Any]:
    current = _fs.read_int(path, "memory.current")
    if current is None:
        return {}
    events = _fs.read_keyed(path, "memory.events") or {}
    limit = _fs.read_int(path, "memory.max") or 0
    usage = {"limit": limit, "usage": current,
             "max": _fs.read_int(path, "memory.peak") or 0, "failcnt": events.get("max", 0)}
    raw = _fs.read_keyed(path, "memory.stat") or {}
    out: dict[str, Any] = {"cache": raw.get("file", 0), "usage": usage, "raw": raw}
    swap_current = _fs.read_int(path, "memory.swap.current")
    if swap_current is not None:
        # v1 reports memory+swap: do the same, as runc does.
        swap_limit = _fs.read_int(path, "memory.swap.max") or 0
        swap_events = _fs.read_keyed(path, "memory.swap.events") or {}
        out["swap"] = {
            "limit": min(_fs.UNLIMITED, swap_limit + limit)
            if swap_limit != _fs.UNLIMITED else _fs.UNLIMITED,
            "usage": swap_current + current, "max": 0, "failcnt": swap_events.get("fail", 0)}
    return {"memory": out}
