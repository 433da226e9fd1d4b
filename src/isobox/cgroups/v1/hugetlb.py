"""cgroup v1 hugetlb controller: per page size limits."""

from __future__ import annotations

import os

from isobox.cgroups import _fs
from isobox.errors import InvalidArgument

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "hugetlb"


def wants(resources: Resources) -> bool:
    return bool(resources.hugepage_limits)


def size_name(page_size: int | str) -> str:
    """The kernel's name for a page size: 2097152 or "2MB" -> "2MB"."""
    if isinstance(page_size, str):
        text = page_size.strip()
        number = text[:-2] if text.upper().endswith(("KB", "MB", "GB")) else ""
        if not number.isdigit():
            raise InvalidArgument(f"invalid hugepage size {page_size!r}: expected e.g. '2MB'")
        return number + text[-2:].upper()
    if page_size <= 0:
        raise InvalidArgument(f"invalid hugepage size {page_size}")
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if page_size >= scale:
            if page_size % scale:
                break
            return f"{page_size // scale}{unit}"
    raise InvalidArgument(f"invalid hugepage size {page_size}: not a multiple of 1KB")


def apply(path: str, resources: Resources) -> None:
    for hp in resources.hugepage_limits or []:
        _fs.write(path, f"hugetlb.{size_name(hp.page_size)}.limit_in_bytes", str(hp.limit))


def sizes(path: str, suffix: str) -> list[str]:
    """Page sizes that have a ``hugetlb.<size>.<suffix>`` file in ``path``."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n[len("hugetlb."):-len(suffix) - 1] for n in names
                  if n.startswith("hugetlb.") and n.endswith("." + suffix)
                  and not n.endswith(".rsvd." + suffix))


def stats(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes(path, "usage_in_bytes"):
        pre = f"hugetlb.{size}."
        out[size] = {"usage": _fs.read_int(path, pre + "usage_in_bytes") or 0,
                     "max": _fs.read_int(path, pre + "max_usage_in_bytes") or 0,
                     "failcnt": _fs.read_int(path, pre + "failcnt") or 0}
    return {"hugetlb": out} if out else {}
