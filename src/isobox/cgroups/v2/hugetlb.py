"""cgroup v2 hugetlb controller: hugetlb.<size>.max."""

from __future__ import annotations

from isobox.cgroups import _fs
from isobox.cgroups.v1.hugetlb import size_name, sizes, wants

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "hugetlb"

__all__ = ["NAME", "apply", "stats", "wants"]


def apply(path: str, resources: Resources) -> None:
    for hp in resources.hugepage_limits or []:
        _fs.write(path, f"hugetlb.{size_name(hp.page_size)}.max", str(hp.limit))


def stats(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes(path, "current"):
        pre = f"hugetlb.{size}."
        events = _fs.read_keyed(path, pre + "events") or {}
        out[size] = {"usage": _fs.read_int(path, pre + "current") or 0,
                     "max": 0, "failcnt": events.get("max", 0)}
    return {"hugetlb": out} if out else {}
