"""``port``: a container's published ports. Until networks arrive (their own
issue) this reports what ``-p`` requested (HostConfig.PortBindings) of a
running container on the default bridge; other network modes publish
nothing, as in Docker. Bindings whose host port is left to the engine
(``-p 80``) are not listed: no port is allocated yet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

_BRIDGE = ("", "default", "bridge")


def _key(port: str) -> tuple[int, str]:
    number, _, proto = port.partition("/")
    return (int(number) if number.isdigit() else 0, proto or "tcp")


def normalize(private: str) -> str:
    """``80`` → ``80/tcp``; refuses what is not PORT[/PROTO]."""
    number, _, proto = private.partition("/")
    proto = (proto or "tcp").lower()
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("tcp", "udp",
                                                                               "sctp"):
        raise InvalidArgument(f"Error: invalid port ({private})")
    return f"{int(number)}/{proto}"


def published(service: ContainerService, ref: str) -> dict[str, list[str]]:
    """{"80/tcp": ["0.0.0.0:8080", ...]}, ports in numeric order."""
    record = service.get(ref)
    host = record.request.get("HostConfig") or {}
    if record.state["Status"] not in ("running", "paused"):
        return {}
    live = service.networking.bindings(service.dir(record.id))
    if live is not None:  # connected to a network: what was really published
        found: dict[str, list[str]] = {}
        for port, address in sorted(live, key=lambda b: _key(b[0])):
            found.setdefault(port, []).append(address)
        return found
    if (host.get("NetworkMode") or "") not in _BRIDGE:
        return {}
    out: dict[str, list[str]] = {}
    bindings = host.get("PortBindings") or {}
    for port in sorted(bindings, key=_key):
        for binding in bindings[port] or []:
            host_port = str((binding or {}).get("HostPort") or "")
            if not host_port:
                continue
            ip = (binding or {}).get("HostIp") or "0.0.0.0"
            shown = f"[{ip}]" if ":" in ip else ip
            out.setdefault(port if "/" in port else f"{port}/tcp", []).append(
                f"{shown}:{host_port}")
    return out


def lookup(service: ContainerService, ref: str, private: str) -> list[str]:
    wanted = normalize(private)
    found = published(service, ref).get(wanted)
    if not found:
        raise NotFound(f"Error: No public port '{wanted}' published for {ref}")
    return found
