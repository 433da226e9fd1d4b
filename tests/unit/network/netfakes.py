"""Fakes for the network manager's seams: links, firewall, sysctl, DNS.
They keep just enough state to answer the manager's questions."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

from isobox.errors import Conflict
from isobox.network import DnsZone, NetworkRules, PortBinding, TapRequest, VethRequest
from isobox.network.nft import port_tag


class FakeLinks:
    def __init__(self, host_nets: Sequence[str] = ("192.0.2.0/24",)) -> None:
        self.kinds: dict[str, str] = {"lo": "", "eth0": ""}
        self.addrs: dict[str, str] = {}
        self.veths: dict[str, VethRequest] = {}
        self.taps: dict[str, TapRequest] = {}
        self.routes: dict[str, str] = {}          # netns -> default gateway
        self.lo_up: set[str] = set()
        self.host_nets = [ipaddress.IPv4Network(n) for n in host_nets]
        self.fail_veth: Exception | None = None
        self.fail_tap: Exception | None = None

    def ensure_bridge(self, name: str, gateway: str, prefixlen: int) -> bool:
        created = name not in self.kinds
        self.kinds[name] = "bridge"
        self.addrs[name] = f"{gateway}/{prefixlen}"
        return created

    def delete_link(self, name: str) -> bool:
        self.veths.pop(name, None)
        self.taps.pop(name, None)
        self.addrs.pop(name, None)
        return self.kinds.pop(name, None) is not None

    def link_kinds(self) -> dict[str, str]:
        return dict(self.kinds)

    def exists(self, name: str) -> bool:
        return name in self.kinds

    def add_tap(self, req: TapRequest) -> None:
        if req.bridge not in self.kinds:
            raise Conflict("no bridge")
        self.kinds[req.ifname] = "tun"
        if self.fail_tap is not None:  # made, then a later step failed
            raise self.fail_tap
        self.taps[req.ifname] = req

    def add_veth(self, req: VethRequest) -> str:
        if self.fail_veth is not None:
            raise self.fail_veth
        if req.bridge not in self.kinds:
            raise Conflict("no bridge")
        used = {v.ifname for v in self.veths.values() if v.netns == req.netns}
        ifname = req.ifname or next(f"eth{n}" for n in range(99) if f"eth{n}" not in used)
        self.kinds[req.host_ifname] = "veth"
        self.veths[req.host_ifname] = VethRequest(req.bridge, req.host_ifname, req.netns, ifname,
                                                  req.ip, req.prefixlen, req.mac, req.gateway)
        if req.gateway and req.netns not in self.routes:
            self.routes[req.netns] = req.gateway
        return ifname

    def netns_up(self, netns: str) -> None:
        self.lo_up.add(netns)

    def default_route(self, netns: str, gateway: str | None) -> None:
        if gateway:
            self.routes.setdefault(netns, gateway)

    def host_networks(self) -> list[ipaddress.IPv4Network]:
        nets = list(self.host_nets)
        nets += [ipaddress.IPv4Network(a, strict=False) for a in self.addrs.values()]
        return nets


class FakeFirewall:
    table = "fake"

    def __init__(self) -> None:
        self.rules: dict[str, int] = {}
        self.set: set[str] = set()
        self.fail_ports: Exception | None = None

    def ensure(self) -> None:
        pass

    def add_network(self, net: NetworkRules) -> None:
        self.set.add(net.bridge)
        self.rules[net.tag] = 2 if net.internal else 3

    def remove_network(self, net_id: str, bridge: str) -> None:
        self.rules.pop(f"net:{net_id}", None)
        self.set.discard(bridge)

    def remove_bridge(self, bridge: str) -> None:
        self.set.discard(bridge)

    def add_ports(self, bindings: Sequence[PortBinding]) -> None:
        if self.fail_ports is not None:
            raise self.fail_ports
        for b in bindings:
            self.rules[port_tag(b)] = 1

    def remove_ports(self, endpoint_id: str, bindings: Sequence[PortBinding] | None = None
                     ) -> None:
        if bindings is not None:
            self.remove_tags(port_tag(b) for b in bindings)
        else:
            self.remove_tags([t for t in self.rules if t.startswith(f"ep:{endpoint_id}:")])

    def tags(self) -> dict[str, int]:
        return dict(self.rules)

    def bridges(self) -> set[str]:
        return set(self.set)

    def remove_tags(self, tags: Iterable[str]) -> None:
        for t in list(tags):
            self.rules.pop(t, None)

    def delete_table(self) -> bool:
        had = bool(self.rules or self.set)
        self.rules.clear()
        self.set.clear()
        return had


class FakeSysctl:
    def __init__(self, forward: str = "0") -> None:
        self.values = {"net.ipv4.ip_forward": forward}

    def read(self, key: str) -> str:
        return self.values[key]

    def write(self, key: str, value: str) -> None:
        self.values[key] = value


class FakeDns:
    def __init__(self) -> None:
        self.zones: dict[str, DnsZone] = {}
        self.upstreams: list[str] = []
        self.up = False

    def apply(self, zones: Mapping[str, DnsZone], upstreams: Sequence[str]) -> None:
        self.zones, self.upstreams, self.up = dict(zones), list(upstreams), bool(zones)

    def running(self) -> bool:
        return self.up

    def stop(self) -> None:
        self.up = False
