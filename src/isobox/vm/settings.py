"""The ``vm`` section of a VM-isolated container's ``shim.json``: what the
engine decided (kernel, initramfs, accelerator, size, disks, shares, NICs)
and the keeper acts on. Checked field by field, like the rest of shim.json.

::

    "vm": {"qemu": str | null, "kernel": str, "initrd": str, "accel": "kvm"|"tcg",
           "memory_mb": int, "cpus": int, "boot_timeout": float,
           "console_log": str | null, "hostname": str, "sysctls": {net.*: str},
           "ephemeral": bool, "templates": str | null,
           "disks": [{"path": str, "serial": str, "readonly": bool,
                      "fstype": "erofs"|"ext4", "role": "layer"|"upper"}],
           "shares": [{"tag": str, "path": str, "readonly": bool}],
           "nics": [{"tap": str, "mac": str, "address": "ip/prefix",
                     "gateway": str | null, "mtu": int | null}]}

Layer disks are listed bottom to top.
"""

from __future__ import annotations

from isobox.errors import InvalidArgument

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

ROLES = ("layer", "upper")


def _check(raw: Any, key: str, kind: type, default: Any = None, *, required: bool = False,
           where: str = "vm") -> Any:
    value = raw.get(key, default) if isinstance(raw, dict) else None
    if value is None:
        if required:
            raise InvalidArgument(f"shim.json: {where}.{key} is missing")
        return default
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise InvalidArgument(f"shim.json: {where}.{key} must be {kind.__name__}")
    return value


class Disk:
    __slots__ = ("fstype", "path", "readonly", "role", "serial")

    def __init__(self, raw: Any) -> None:
        self.path: str = _check(raw, "path", str, required=True, where="vm.disks")
        self.serial: str = _check(raw, "serial", str, required=True, where="vm.disks")
        self.readonly: bool = _check(raw, "readonly", bool, True, where="vm.disks")
        self.fstype: str = _check(raw, "fstype", str, "erofs", where="vm.disks")
        self.role: str = _check(raw, "role", str, "layer", where="vm.disks")
        if self.role not in ROLES:
            raise InvalidArgument(f"shim.json: vm.disks.role {self.role!r} is not one of {ROLES}")
        if not self.serial.isalnum() or len(self.serial) > 20:
            raise InvalidArgument(f"shim.json: vm.disks.serial {self.serial!r}: want up to "
                                  "20 letters and digits")


class Share:
    __slots__ = ("path", "readonly", "tag")

    def __init__(self, raw: Any) -> None:
        self.tag: str = _check(raw, "tag", str, required=True, where="vm.shares")
        self.path: str = _check(raw, "path", str, required=True, where="vm.shares")
        self.readonly: bool = _check(raw, "readonly", bool, False, where="vm.shares")


class Nic:
    __slots__ = ("address", "gateway", "mac", "mtu", "tap")

    def __init__(self, raw: Any) -> None:
        self.tap: str = _check(raw, "tap", str, required=True, where="vm.nics")
        self.mac: str = _check(raw, "mac", str, required=True, where="vm.nics")
        self.address: str = _check(raw, "address", str, required=True, where="vm.nics")
        self.gateway: str | None = _check(raw, "gateway", str, where="vm.nics")
        self.mtu: int | None = _check(raw, "mtu", int, where="vm.nics")


class VmSettings:
    __slots__ = (
        "accel",
        "boot_timeout",
        "console_log",
        "cpus",
        "disks",
        "ephemeral",
        "hostname",
        "initrd",
        "kernel",
        "memory_mb",
        "nics",
        "qemu",
        "shares",
        "sysctls",
        "templates",
    )

    def __init__(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise InvalidArgument("shim.json: vm must be an object")
        self.qemu: str | None = _check(raw, "qemu", str)
        self.kernel: str = _check(raw, "kernel", str, required=True)
        self.initrd: str = _check(raw, "initrd", str, required=True)
        self.accel: str = _check(raw, "accel", str, "tcg")
        if self.accel not in ("kvm", "tcg"):
            raise InvalidArgument(f"shim.json: vm.accel {self.accel!r}: want kvm or tcg")
        self.memory_mb: int = _check(raw, "memory_mb", int, 256)
        self.cpus: int = _check(raw, "cpus", int, 1)
        if self.memory_mb < 64 or self.cpus < 1:
            raise InvalidArgument("shim.json: vm needs at least 64 MB and one CPU")
        self.boot_timeout: float = _check(raw, "boot_timeout", float, 60.0)
        self.console_log: str | None = _check(raw, "console_log", str)
        self.hostname: str = _check(raw, "hostname", str, "")
        #: The container shares the guest's network stack: its net.* sysctls go there.
        self.sysctls: dict[str, str] = _check(raw, "sysctls", dict, {})
        #: Nothing to keep at the end (--rm: the writable layer is the guest's
        #: tmpfs), so the VM is stopped hard as soon as the container exits.
        self.ephemeral: bool = _check(raw, "ephemeral", bool, False)
        #: Where VM templates live (see isobox.vm.template); None: always boot.
        self.templates: str | None = _check(raw, "templates", str)
        self.disks = [Disk(d) for d in _check(raw, "disks", list, [])]
        self.shares = [Share(s) for s in _check(raw, "shares", list, [])]
        self.nics = [Nic(n) for n in _check(raw, "nics", list, [])]
        if sum(d.role == "upper" for d in self.disks) > 1:
            raise InvalidArgument("shim.json: vm has more than one upper disk")

    def storage_request(self) -> dict[str, object]:
        """The agent's ``storage`` op for these disks and shares."""
        upper = next((d for d in self.disks if d.role == "upper"), None)
        return {
            "layers": [{"serial": d.serial, "fstype": d.fstype}
                       for d in self.disks if d.role == "layer"],
            "upper": None if upper is None else {"serial": upper.serial, "fstype": upper.fstype},
            "shares": [{"tag": s.tag, "readonly": s.readonly} for s in self.shares],
        }

    def network_request(self, current_mac: str | None = None) -> dict[str, object]:
        """``current_mac``: the NIC's address now (restored from a template)."""
        found = {} if current_mac is None else {"current_mac": current_mac}
        return {
            "interfaces": [{"mac": n.mac, "name": f"eth{i}", "address": n.address,
                            "gateway": n.gateway if i == 0 else None, "mtu": n.mtu, **found}
                           for i, n in enumerate(self.nics)],
            "hostname": self.hostname or None,
            "sysctls": self.sysctls,
        }
