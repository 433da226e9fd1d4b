"""``port``: a running container's published ports, as its network endpoints
hold them (``-p`` and ``-P``, with the host ports really allocated). A
container without an endpoint (``none``, ``host``, ``container:X``)
publishes nothing, as in Docker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService


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
    if record.state["Status"] not in ("running", "paused"):
        return {}
    found: dict[str, list[str]] = {}
    for port, address in sorted(service.networking.bindings(service.dir(record.id)) or [],
                                key=lambda b: _key(b[0])):
        found.setdefault(port, []).append(address)
    return found


def lookup(service: ContainerService, ref: str, private: str) -> list[str]:
    wanted = normalize(private)
    found = published(service, ref).get(wanted)
    if not found:
        raise NotFound(f"Error: No public port '{wanted}' published for {ref}")
    return found
