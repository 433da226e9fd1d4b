"""cgroup v1 pids controller: the process count limit."""

from __future__ import annotations

from isobox.cgroups import _fs

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "pids"


def wants(resources: Resources) -> bool:
    return resources.pids is not None


def limit_value(limit: int) -> str:
    """pids.max text: a positive count, or "max" for 0 and below (no limit)."""
    return str(limit) if limit > 0 else "max"


def apply(path: str, resources: Resources) -> None:
    if resources.pids is not None:
        _fs.write(path, "pids.max", limit_value(resources.pids.limit))


def stats(path: str) -> dict[str, Any]:
    current = _fs.read_int(path, "pids.current")
    if current is None:
        return {}
    limit = _fs.read_int(path, "pids.max")
    return {"pids": {"current": current,
                     "limit": 0 if limit in (None, _fs.UNLIMITED) else limit}}
