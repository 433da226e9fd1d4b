"""cgroup v1 devices controller: the device allow/deny list.

Writes ``a`` to devices.deny, then each rule of the spec in order. A running
container briefly sees every device denied during an update; runc avoids
that with a rule emulator, which we may add when updates need it.
"""

from __future__ import annotations

from isobox.cgroups import _fs
from isobox.errors import InvalidArgument

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import DeviceCgroup, Resources

NAME = "devices"


def wants(resources: Resources) -> bool:
    return bool(resources.devices)


def _number(value: int | None) -> str:
    return "*" if value is None or value < 0 else str(value)


def rule_line(rule: DeviceCgroup) -> str:
    """The kernel's text for one rule: "c 1:3 rwm", "b *:* r", or "a"."""
    kind = rule.type or "a"
    if kind not in ("a", "b", "c"):
        raise InvalidArgument(f"invalid device cgroup type {kind!r}: must be a, b or c")
    access = rule.access or "rwm"
    if not set(access) <= set("rwm"):
        raise InvalidArgument(f"invalid device cgroup access {access!r}: must use r, w, m")
    if kind == "a":
        return "a"
    return f"{kind} {_number(rule.major)}:{_number(rule.minor)} {access}"


def apply(path: str, resources: Resources) -> None:
    if resources.devices is None:
        return
    lines = [(rule.allow, rule_line(rule)) for rule in resources.devices]
    _fs.write(path, "devices.deny", "a")
    allowed = False
    for allow, line in lines:
        if not allow and line == "a" and not allowed:
            continue  # "deny all" before any allow: what was just written
        allowed = allowed or allow
        _fs.write(path, "devices.allow" if allow else "devices.deny", line)


def stats(path: str) -> dict[str, Any]:
    return {}
