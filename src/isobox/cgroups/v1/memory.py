"""cgroup v1 memory controller: limits, soft limit, memory+swap, swappiness, OOM killer."""

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

LIMIT = "memory.limit_in_bytes"
SWAP_LIMIT = "memory.memsw.limit_in_bytes"


def wants(resources: Resources) -> bool:
    m = resources.memory
    return m is not None and any(
        v is not None for v in (m.limit, m.reservation, m.swap, m.kernel_tcp, m.swappiness,
                                m.disable_oom_killer))


def _check(what: str, value: int | None) -> int:
    """0 and None mean "leave as is" (runc's convention); -1 means unlimited."""
    if value is None:
        return 0
    if value < -1:
        raise InvalidArgument(f"invalid memory {what} {value}: must be -1 (unlimited) or >= 0")
    return value


def write_order(current_limit: int, limit: int, swap: int) -> list[tuple[str, str]]:
    """The writes for memory and memory+swap limits, in an order the kernel accepts.

    The kernel keeps memsw >= limit at every step, so raising both needs the
    memsw file first and lowering both needs the limit first: like runc,
    choose by the current limit (0 and None in the spec mean "leave as is").
    """
    writes = []
    if limit:
        writes.append((LIMIT, str(limit)))
    if swap:
        writes.append((SWAP_LIMIT, str(swap)))
    if limit and swap and (swap == -1 or current_limit < swap):
        writes.reverse()
    return writes


def _set_pair(path: str, limit: int, swap: int) -> None:
    current = (_fs.read_int(path, LIMIT) or 0) if limit and swap else 0
    writes = write_order(current, limit, swap)
    try:
        for name, value in writes:
            _fs.write(path, name, value)
    except InvalidArgument:
        if len(writes) < 2:
            raise
        # The other order, as runc would after a refusal.
        for name, value in reversed(writes):
            _fs.write(path, name, value)


def apply(path: str, resources: Resources) -> None:
    m = resources.memory
    if m is None:
        return
    limit = _check("limit", m.limit)
    swap = _check("swap", m.swap)
    has_memsw = _fs.exists(path, SWAP_LIMIT)
    if limit == -1 and swap == 0 and has_memsw:
        swap = -1  # unlimited memory means unlimited memory+swap too
    if swap and not has_memsw:
        _log.warning("%s: swap accounting is off in this kernel; memory limited without swap",
                     path)
        swap = 0
    if swap > 0 and limit > 0 and swap < limit:
        raise InvalidArgument(f"memory+swap limit {swap} must be >= memory limit {limit}")
    _set_pair(path, limit, swap)
    reservation = _check("reservation", m.reservation)
    if reservation:
        _fs.write(path, "memory.soft_limit_in_bytes", str(reservation))
    if m.kernel:
        _log.warning("kernel memory limits are deprecated and ignored (as runc does)")
    if m.kernel_tcp:
        _fs.write(path, "memory.kmem.tcp.limit_in_bytes", str(m.kernel_tcp))
    if m.swappiness is not None and m.swappiness != -1:
        if not 0 <= m.swappiness <= 100:
            raise InvalidArgument(f"invalid memory swappiness {m.swappiness}: valid range is 0-100")
        _fs.write(path, "memory.swappiness", str(m.swappiness))
    if m.disable_oom_killer:
        _fs.write(path, "memory.oom_control", "1")


def _entry(path: str, prefix: str) -> dict[str, int] | None:
    usage = _fs.read_int(path, prefix + "usage_in_bytes")
    if usage is None:
        return None
    return {
        "limit": _fs.read_int(path, prefix + "limit_in_bytes") or 0,
        "usage": usage,
        "max": _fs.read_int(path, prefix + "max_usage_in_bytes") or 0,
        "failcnt": _fs.read_int(path, prefix + "failcnt") or 0,
    }


def stats(path: str) -> dict[str, Any]:
    usage = _entry(path, "memory.")
    if usage is None:
        return {}
    out: dict[str, Any] = {"usage": usage}
    for key, prefix in (("swap", "memory.memsw."), ("kernel", "memory.kmem."),
                        ("kernelTCP", "memory.kmem.tcp.")):
        entry = _entry(path, prefix)
        if entry is not None:
            out[key] = entry
    raw = _fs.read_keyed(path, "memory.stat") or {}
    out["cache"] = raw.get("total_cache", raw.get("cache", 0))
    out["raw"] = raw
    return {"memory": out}
