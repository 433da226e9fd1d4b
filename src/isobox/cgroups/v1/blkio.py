"""cgroup v1 blkio controller: weights (CFQ or BFQ files) and throttling."""

from __future__ import annotations

from isobox.cgroups import _fs

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import BlockIO, Resources, ThrottleDevice

NAME = "blkio"

_THROTTLE = (
    ("throttle_read_bps_device", "blkio.throttle.read_bps_device"),
    ("throttle_write_bps_device", "blkio.throttle.write_bps_device"),
    ("throttle_read_iops_device", "blkio.throttle.read_iops_device"),
    ("throttle_write_iops_device", "blkio.throttle.write_iops_device"),
)

# runc's stats key -> the *_recursive file, CFQ name first, then BFQ, then throttle.
_STATS = (
    ("ioServiceBytesRecursive", "io_service_bytes_recursive"),
    ("ioServicedRecursive", "io_serviced_recursive"),
    ("ioQueueRecursive", "io_queued_recursive"),
    ("ioServiceTimeRecursive", "io_service_time_recursive"),
    ("ioWaitTimeRecursive", "io_wait_time_recursive"),
    ("ioMergedRecursive", "io_merged_recursive"),
    ("ioTimeRecursive", "time_recursive"),
    ("sectorsRecursive", "sectors_recursive"),
)


def wants(resources: Resources) -> bool:
    b = resources.block_io
    return b is not None and bool(
        b.weight or b.leaf_weight or b.weight_device
        or any(getattr(b, attr) for attr, _ in _THROTTLE))


def _weight_files(path: str) -> tuple[str, str]:
    """(weight, weight_device) file names: CFQ's when present, else BFQ's."""
    if not _fs.exists(path, "blkio.weight") and _fs.exists(path, "blkio.bfq.weight"):
        return "blkio.bfq.weight", "blkio.bfq.weight_device"
    return "blkio.weight", "blkio.weight_device"


def _throttles(b: BlockIO, attr: str) -> list[ThrottleDevice]:
    devices: list[ThrottleDevice] | None = getattr(b, attr)
    return devices or []


def apply(path: str, resources: Resources) -> None:
    b = resources.block_io
    if b is None:
        return
    weight_file, device_file = _weight_files(path)
    if b.weight:
        _fs.write(path, weight_file, str(b.weight))
    if b.leaf_weight:
        _fs.write(path, "blkio.leaf_weight", str(b.leaf_weight))
    for wd in b.weight_device or []:
        if wd.weight:
            _fs.write(path, device_file, f"{wd.major}:{wd.minor} {wd.weight}")
        if wd.leaf_weight:
            _fs.write(path, "blkio.leaf_weight_device", f"{wd.major}:{wd.minor} {wd.leaf_weight}")
    for attr, name in _THROTTLE:
        for td in _throttles(b, attr):
            _fs.write(path, name, f"{td.major}:{td.minor} {td.rate}")


def parse_recursive(text: str) -> list[dict[str, Any]]:
    """Lines "8:0 Read 4096" (and a "Total N" line, skipped) as runc's entries."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            op, value = parts[1], parts[2]
        elif len(parts) == 2 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            op, value = "", parts[1]
        else:
            continue
        try:
            out.append({"major": int(major), "minor": int(minor), "op": op, "value": int(value)})
        except ValueError:
            continue
    return out


def stats(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
        for key, suffix in _STATS:
            text = _fs.read_opt(path, prefix + suffix)
            if text is not None and key not in out:
                out[key] = parse_recursive(text)
        if out:
            break
    return {"blkio": out} if out else {}
