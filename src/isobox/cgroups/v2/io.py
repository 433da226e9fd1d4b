"""cgroup v2 io controller: io.bfq.weight or io.weight, and io.max."""

from __future__ import annotations

from isobox.cgroups import _fs
from isobox.cgroups.v1.blkio import wants

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Resources

NAME = "io"

__all__ = ["NAME", "apply", "max_lines", "stats", "wants", "weight_to_io"]

_MAX_KEYS = (
    ("throttle_read_bps_device", "rbps"),
    ("throttle_write_bps_device", "wbps"),
    ("throttle_read_iops_device", "riops"),
    ("throttle_write_iops_device", "wiops"),
)


def weight_to_io(weight: int) -> int:
    """runc's map of blkio weight [10, 1000] onto io.weight [1, 10000]."""
    if weight <= 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def max_lines(resources: Resources) -> list[str]:
    """One io.max line per throttle rule: "8:0 rbps=1048576"."""
    b = resources.block_io
    lines: list[str] = []
    if b is None:
        return lines
    for attr, key in _MAX_KEYS:
        for td in getattr(b, attr) or []:
            lines.append(f"{td.major}:{td.minor} {key}={td.rate if td.rate > 0 else 'max'}")
    return lines


def apply(path: str, resources: Resources) -> None:
    b = resources.block_io
    if b is None:
        return
    bfq = _fs.exists(path, "io.bfq.weight")
    if b.weight:
        if bfq:
            _fs.write(path, "io.bfq.weight", str(b.weight))
        else:
            _fs.write(path, "io.weight", str(weight_to_io(b.weight)))
    for wd in b.weight_device or []:
        if wd.weight:
            if bfq:
                _fs.write(path, "io.bfq.weight", f"{wd.major}:{wd.minor} {wd.weight}")
            else:
                _fs.write(path, "io.weight",
                          f"{wd.major}:{wd.minor} {weight_to_io(wd.weight)}")
    for line in max_lines(resources):
        _fs.write(path, "io.max", line)


_STAT_OPS = (
    ("ioServiceBytesRecursive", (("rbytes", "Read"), ("wbytes", "Write"))),
    ("ioServicedRecursive", (("rios", "Read"), ("wios", "Write"))),
)


def stats(path: str) -> dict[str, Any]:
    text = _fs.read_opt(path, "io.stat")
    if text is None:
        return {}
    out: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in _STAT_OPS}
    for line in text.splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        for key, ops in _STAT_OPS:
            for field, op in ops:
                if values.get(field, "").isdigit() and major.isdigit() and minor.isdigit():
                    out[key].append({"major": int(major), "minor": int(minor), "op": op,
                                     "value": int(values[field])})
    return {"blkio": out}
