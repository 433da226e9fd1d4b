"""Address management, the pure part: validating a network's subnet, gateway
and range, choosing a subnet that collides with nothing on the host, and
picking a free address. Persistence (the lease table) lives in ``store``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from isobox.errors import Conflict, InvalidArgument, Unavailable

Net = ipaddress.IPv4Network
Addr = ipaddress.IPv4Address


@dataclass(frozen=True)
class Pool:
    """A block carved into subnets of one size (Docker's default-address-pools)."""

    base: str
    size: int

    def subnets(self) -> Iterator[Net]:
        base = ipaddress.IPv4Network(self.base)
        if self.size < base.prefixlen:
            raise InvalidArgument(f"pool {self.base}: size /{self.size} is larger than the pool")
        return base.subnets(new_prefix=self.size)


#: Docker's order: 172.17-31 as /16s, then 192.168 as /20s; then 10/8 as /16s.
DEFAULT_POOLS: tuple[Pool, ...] = (
    *(Pool(f"172.{n}.0.0/16", 16) for n in range(17, 32)),
    Pool("192.168.0.0/16", 20),
    Pool("10.0.0.0/8", 16),
)


@dataclass(frozen=True)
class Subnet:
    """A validated IPAM config: the subnet, its gateway, and the range to allocate from."""

    network: Net
    gateway: Addr
    ip_range: Net

    @property
    def cidr(self) -> str:
        return str(self.network)

    def reserved(self) -> set[int]:
        """Addresses never leased: the network and broadcast addresses, the gateway."""
        return {int(self.network.network_address), int(self.network.broadcast_address),
                int(self.gateway)}


def parse_subnet(subnet: str, gateway: str = "", ip_range: str = "") -> Subnet:
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid subnet {subnet!r}: want an IPv4 CIDR") from None
    if net.prefixlen > 30:
        raise InvalidArgument(f"subnet {net} is too small: at most /30")
    try:
        gw = ipaddress.IPv4Address(gateway) if gateway else net.network_address + 1
    except ValueError:
        raise InvalidArgument(f"invalid gateway {gateway!r}") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise InvalidArgument(f"gateway {gw} is not a usable address of subnet {net}")
    try:
        rng = ipaddress.IPv4Network(ip_range, strict=False) if ip_range else net
    except ValueError:
        raise InvalidArgument(f"invalid ip-range {ip_range!r}") from None
    if not rng.subnet_of(net):
        raise InvalidArgument(f"ip-range {rng} is not inside subnet {net}")
    return Subnet(net, gw, rng)


def overlaps(a: Net, others: Iterable[Net]) -> bool:
    return any(a.overlaps(b) for b in others)


def choose_subnet(pools: Sequence[Pool], taken: Iterable[Net],
                  avoid_addrs: Iterable[Addr] = ()) -> Net:
    """The first subnet of the pools that overlaps no taken network (host
    routes and addresses, other isobox networks) and holds none of
    ``avoid_addrs`` (the host's nameservers: a route to them through a bridge
    would cut the host off its resolver)."""
    taken = [t for t in taken if t.prefixlen > 0]  # a default route takes nothing
    avoid = list(avoid_addrs)
    for pool in pools:
        for candidate in pool.subnets():
            if overlaps(candidate, taken) or any(a in candidate for a in avoid):
                continue
            return candidate
    raise Unavailable("no free subnet left in the address pools: "
                      "give --subnet or configure other pools")


def allocate(subnet: Subnet, used: Iterable[str], requested: str | None = None) -> str:
    """A free address of the range: ``requested`` when given (a clear error when
    it is taken or outside), else the lowest free one."""
    taken = {int(ipaddress.IPv4Address(u)) for u in used} | subnet.reserved()
    if requested:
        try:
            want = ipaddress.IPv4Address(requested)
        except ValueError:
            raise InvalidArgument(f"invalid IP address {requested!r}") from None
        if want not in subnet.ip_range:
            raise InvalidArgument(f"address {want} is outside the network's range "
                                  f"{subnet.ip_range}")
        if int(want) in subnet.reserved():
            raise InvalidArgument(f"address {want} is reserved (network, broadcast or gateway)")
        if int(want) in taken:
            raise Conflict(f"address {want} is already in use on network {subnet.network}")
        return str(want)
    first = int(subnet.ip_range.network_address)
    last = int(subnet.ip_range.broadcast_address)
    for n in range(first, last + 1):
        if n not in taken:
            return str(ipaddress.IPv4Address(n))
    raise Unavailable(f"no free address left in {subnet.ip_range}")
