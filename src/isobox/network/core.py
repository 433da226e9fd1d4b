"""The NetworkManager's state and plumbing: configuration, the lock, the
predefined networks, bridge and firewall set-up, endpoint teardown, DNS sync.
The public operations are in ``manager``."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Self

from isobox.errors import Conflict, NotFound
from isobox.linux.lazylog import get_logger
from isobox.network import ipam
from isobox.network.dnsctl import DnsProcess, DnsService, DnsZone
from isobox.network.host import ProcSysctl, ResolvConf, Sysctl, nameserver_addrs, read_resolv_conf
from isobox.network.model import (
    BRIDGE_NAME_OPTION,
    DEFAULT_BRIDGE_OPTION,
    DRIVER_BRIDGE,
    DRIVER_HOST,
    DRIVER_NULL,
    EndpointInfo,
    Network,
)
from isobox.network.naming import Names, check_table, new_id
from isobox.network.netlink import Links, NetlinkLinks
from isobox.network.nft import Firewall, NetworkRules, NftFirewall
from isobox.network.ports import PortChecker
from isobox.network.store import Store

log = get_logger(__name__)

IP_FORWARD = "net.ipv4.ip_forward"
META_FORWARD_CHANGED = "ip_forward_changed"


class ManagerCore:
    def __init__(self, state_dir: str, *, table: str = "isobox", bridge_prefix: str = "isobox",
                 pools: Sequence[ipam.Pool] = ipam.DEFAULT_POOLS,
                 default_subnet: str | None = None, resolv_conf: str = "/etc/resolv.conf",
                 dns_upstreams: Sequence[str] | None = None, dns_port: int = 53,
                 links: Links | None = None, firewall: Firewall | None = None,
                 sysctl: Sysctl | None = None, dns: DnsService | None = None,
                 port_checker: PortChecker | None = None) -> None:
        self.state_dir = state_dir
        self.names = Names(bridge_prefix)
        self.pools = tuple(pools)
        self.default_subnet = default_subnet
        self.resolv_conf_path = resolv_conf
        self._upstreams = list(dns_upstreams) if dns_upstreams is not None else None
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.store = Store(os.path.join(state_dir, "network.db"))
        self.links: Links = links if links is not None else NetlinkLinks()
        self.firewall: Firewall = firewall if firewall is not None else NftFirewall(
            check_table(table))
        self.sysctl: Sysctl = sysctl if sysctl is not None else ProcSysctl()
        self.dns: DnsService = dns if dns is not None else DnsProcess(
            os.path.join(state_dir, "dns"), port=dns_port)
        self.port_checker = port_checker
        self._lock_fd = os.open(os.path.join(state_dir, "network.lock"),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._depth = 0
        self._thread_lock = threading.RLock()

    def close(self) -> None:
        self.store.close()
        os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The manager's exclusive lock: across processes (flock) and across
        threads of this one (an RLock); re-entrant."""
        with self._thread_lock:
            if self._depth == 0:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- host facts ---------------------------------------------------------------

    def host_resolv_conf(self) -> ResolvConf:
        return read_resolv_conf(self.resolv_conf_path)

    def upstreams(self) -> list[str]:
        if self._upstreams is not None:
            return list(self._upstreams)
        return [str(a) for a in nameserver_addrs(self.host_resolv_conf())]

    def _free_subnet(self) -> ipam.Net:
        taken = self.links.host_networks()
        taken += [ipam.Net(n.subnet) for n in self.store.networks() if n.subnet]
        return ipam.choose_subnet(self.pools, taken, nameserver_addrs(self.host_resolv_conf()))

    # -- networks -------------------------------------------------------------------

    def _ensure_predefined(self) -> None:
        if {n.name for n in self.store.networks()} >= {"bridge", "host", "none"}:
            return
        with self.locked():
            have = {n.name for n in self.store.networks()}
            now = time.time()
            if "bridge" not in have:
                sub = ipam.parse_subnet(self.default_subnet or str(self._free_subnet()))
                bridge = self.names.default_bridge
                self.store.add_network(Network(
                    id=new_id(), name="bridge", driver=DRIVER_BRIDGE, created=now, bridge=bridge,
                    subnet=sub.cidr, gateway=str(sub.gateway), predefined=True,
                    options={DEFAULT_BRIDGE_OPTION: "true",
                             "com.docker.network.bridge.enable_icc": "true",
                             "com.docker.network.bridge.enable_ip_masquerade": "true",
                             "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                             BRIDGE_NAME_OPTION: bridge,
                             "com.docker.network.driver.mtu": "1500"}))
            for name, driver in (("host", DRIVER_HOST), ("none", DRIVER_NULL)):
                if name not in have:
                    self.store.add_network(Network(id=new_id(), name=name, driver=driver,
                                                   created=now, predefined=True))

    def networks(self) -> list[Network]:
        self._ensure_predefined()
        return self.store.networks()

    def get(self, ref: str) -> Network:
        """A network by name, full id, or unique id prefix."""
        nets = self.networks()
        for net in nets:
            if net.name == ref:
                return net
        for net in nets:
            if net.id == ref:
                return net
        found = [n for n in nets if ref and n.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise Conflict(f"network {ref} is ambiguous ({len(found)} matches found)")
        raise NotFound(f"network {ref} not found")


    def _plumb(self, net: Network) -> None:
        """Bridge, sysctls, firewall rules: idempotent, also repairs after a reboot."""
        self.links.ensure_bridge(net.bridge, net.gateway, net.prefixlen)
        # Published ports on 127.0.0.1 are DNAT'd out of the bridge with a
        # loopback source: the kernel drops those as martians unless this is on.
        self.sysctl.write(f"net.ipv4.conf.{net.bridge}.route_localnet", "1")
        self.firewall.add_network(NetworkRules(net.id, net.bridge, net.subnet, net.internal))
        if not net.internal:
            self._enable_forwarding()

    def _unplumb(self, net: Network) -> None:
        self.firewall.remove_network(net.id, net.bridge)
        self.links.delete_link(net.bridge)

    def _ensure_plumbed(self, net: Network) -> Network:
        """The network with its bridge up (made again after a reboot or a
        ``destroy``). The default bridge's subnet was chosen when its record
        was made; if another engine root or a new host route has taken it
        since, and no address of it is leased, it moves to a free one first."""
        if self.links.exists(net.bridge):
            return net
        if net.predefined and net.subnet and self.default_subnet is None:
            taken = [t for t in self.links.host_networks() if t.prefixlen > 0]
            if ipam.overlaps(ipam.Net(net.subnet), taken):
                new = ipam.parse_subnet(str(self._free_subnet()))
                if self.store.move_network(net.id, new.cidr, str(new.gateway)):
                    log.warning("network %s: subnet %s is taken on the host, moved to %s",
                                net.name, net.subnet, new.cidr)
                    net = replace(net, subnet=new.cidr, gateway=str(new.gateway))
        self._plumb(net)
        return net

    def _enable_forwarding(self) -> None:
        if self.sysctl.read(IP_FORWARD) != "1":
            self.store.set_meta(META_FORWARD_CHANGED, "1")
            self.sysctl.write(IP_FORWARD, "1")

    def _restore_forwarding(self) -> None:
        """Turn forwarding back off if we turned it on and no network of ours
        needs it any more; never when the host had it on."""
        if self.store.get_meta(META_FORWARD_CHANGED) != "1":
            return
        present = self.links.link_kinds()
        if any(n.is_bridge and not n.internal and n.bridge in present
               for n in self.store.networks()):
            return
        self.sysctl.write(IP_FORWARD, "0")
        self.store.set_meta(META_FORWARD_CHANGED, None)

    def endpoint(self, endpoint_id: str) -> EndpointInfo:
        ep = self.store.endpoint(endpoint_id)
        if ep is None:
            raise NotFound(f"endpoint {endpoint_id} not found")
        return ep

    def endpoints(self, network: str | None = None, *, container_id: str | None = None
                  ) -> list[EndpointInfo]:
        eps = self.store.endpoints(self.get(network).id if network else None)
        return [e for e in eps if container_id is None or e.container_id == container_id]

    def _teardown(self, ep: EndpointInfo) -> None:
        # Port rules are added after their rows and removed before them, so
        # an endpoint without rows has no rules (an nft call saved per endpoint).
        if self.store.ports(ep.id):
            self.firewall.remove_ports(ep.id)
        self.store.remove_endpoint(ep.id)
        if ep.host_ifname:
            self.links.delete_link(ep.host_ifname)
        net = next((n for n in self.store.networks() if n.id == ep.network_id), None)
        if net is not None and net.user_defined and (ep.aliases or ep.container_name):
            self._sync_dns()
        if net is not None and net.is_bridge and os.path.exists(ep.netns):
            # The default route may have gone with this interface.
            for other in self.store.endpoints(netns=ep.netns):
                other_net = self.get(other.network_id)
                if other_net.is_bridge and not other_net.internal and other.ip:
                    try:
                        self.links.default_route(ep.netns, other_net.gateway)
                    except Exception as exc:  # best effort: the container lives on
                        log.warning("default route for %s: %s", ep.netns, exc)
                    break

    def dns_zones(self) -> dict[str, DnsZone]:
        zones = {}
        for net in self.store.networks():
            if not net.user_defined:
                continue
            records = self.store.records(net.id)
            for ep in self.store.endpoints(net.id):
                for name in ep.aliases:
                    ips = records.setdefault(name.lower().rstrip("."), [])
                    if ep.ip and ep.ip not in ips:
                        ips.append(ep.ip)
            zones[net.id] = DnsZone(net.gateway, net.subnet, records)
        return zones

    def _sync_dns(self) -> None:
        self.dns.apply(self.dns_zones(), self.upstreams())

