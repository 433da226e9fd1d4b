"""The guest's network: each NIC found by its MAC (and given the container's
MAC when it had a template's), renamed, addressed,
brought up, with a default route; loopback up; the hostname.

Through busybox's ``ip`` rather than raw netlink: a handful of argv lists
that the unit tests check as data, where netlink would be a few hundred
lines of message packing to maintain; each call costs a fork and exec of a
static binary (~1.5 ms on the host), a few per boot.
"""

from __future__ import annotations

import os
import time

from isobox.agent import command
from isobox.errors import NotFound

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.agent.requests import Interface, NetworkRequest

BUSYBOX = "/bin/busybox"
NIC_WAIT = 10.0  # seconds a NIC may take to appear (probing is asynchronous)


def find_nic(mac: str, sys_root: str = "/sys") -> str | None:
    """The name of the interface with this MAC address, or None."""
    net = os.path.join(sys_root, "class", "net")
    try:
        names = sorted(os.listdir(net))
    except FileNotFoundError:
        return None
    for name in names:
        try:
            with open(os.path.join(net, name, "address")) as f:
                if f.read().strip().lower() == mac.lower():
                    return name
        except OSError:
            continue
    return None


def wait_for_nic(mac: str, sys_root: str = "/sys", timeout: float | None = None) -> str:
    deadline = time.monotonic() + (NIC_WAIT if timeout is None else timeout)
    while True:
        name = find_nic(mac, sys_root)
        if name is not None:
            return name
        if time.monotonic() > deadline:
            raise NotFound(f"no network interface with MAC {mac}")
        time.sleep(0.02)


def ip_commands(iface: Interface, current: str, busybox: str = BUSYBOX) -> list[list[str]]:
    """The ``ip`` calls that make interface ``current`` into ``iface``."""
    ip = [busybox, "ip"]
    name = iface.name
    commands = []
    if current != name or iface.current_mac != iface.mac:
        commands.append([*ip, "link", "set", "dev", current, "down"])  # renaming needs it down
    if current != name:
        commands.append([*ip, "link", "set", "dev", current, "name", name])
    if iface.current_mac != iface.mac:  # a NIC restored from a template has the template's
        commands.append([*ip, "link", "set", "dev", name, "address", iface.mac])
    up = [*ip, "link", "set", "dev", name]
    if iface.mtu is not None:
        up += ["mtu", str(iface.mtu)]
    commands.append([*ip, "addr", "flush", "dev", name])  # the request's address, only
    commands.append([*ip, "addr", "add", iface.address, "dev", name])
    commands.append([*up, "up"])
    if iface.gateway is not None:
        family = ["-6"] if ":" in iface.gateway else []
        commands.append([*ip, *family, "route", "replace", "default", "via", iface.gateway,
                         "dev", name])
    return commands


def configure(req: NetworkRequest, sys_root: str = "/sys", busybox: str = BUSYBOX) -> None:
    from isobox.linux import netdev

    netdev.set_up("lo")
    for iface in req.interfaces:
        current = wait_for_nic(iface.current_mac, sys_root)
        for argv in ip_commands(iface, current, busybox):
            command.run(argv)
    for key, value in req.sysctls.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    if req.hostname is not None:
        from isobox.linux import libc

        libc.sethostname(req.hostname)
