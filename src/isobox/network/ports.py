"""Choosing host ports for ``-p``: every check happens before anything
changes, so a port already taken fails the whole request cleanly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from isobox.errors import Conflict, Unavailable
from isobox.network.host import bind_check
from isobox.network.model import EndpointInfo, PortBinding, PortSpec

#: (host_ip, host_port or 0, proto) -> the port, bound once and let go; raises
#: Conflict when something on the host holds it.
PortChecker = Callable[[str, int, str], int]

RANDOM_TRIES = 32


class PortTable(Protocol):
    def port_taken(self, host_ip: str, host_port: int, proto: str) -> bool: ...


def _clash(a: PortBinding, host_ip: str, port: int, proto: str) -> bool:
    return (a.host_port == port and a.proto == proto
            and (a.host_ip == host_ip or "0.0.0.0" in (a.host_ip, host_ip)))


def plan_ports(ep: EndpointInfo, specs: Sequence[PortSpec], table: PortTable,
               checker: PortChecker | None = None) -> list[PortBinding]:
    check = checker or bind_check
    out: list[PortBinding] = []

    def taken(host_ip: str, port: int, proto: str) -> bool:
        return (table.port_taken(host_ip, port, proto)
                or any(_clash(b, host_ip, port, proto) for b in out))

    for spec in specs:
        if spec.host_port:
            if taken(spec.host_ip, spec.host_port, spec.proto):
                raise Conflict(f"Bind for {spec.host_ip}:{spec.host_port} failed: port is "
                               "already allocated")
            port = check(spec.host_ip, spec.host_port, spec.proto)
        else:
            for _ in range(RANDOM_TRIES):
                port = check(spec.host_ip, 0, spec.proto)
                if not taken(spec.host_ip, port, spec.proto):
                    break
            else:
                raise Unavailable(f"no free {spec.proto} port found on {spec.host_ip}")
        out.append(PortBinding(ep.id, spec.host_ip, port, ep.ip, spec.container_port,
                               spec.proto))
    return out
