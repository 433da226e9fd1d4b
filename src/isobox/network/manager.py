"""NetworkManager: the one object the engine drives for networks,
endpoints, published ports and DNS.

Every mutation runs under an exclusive ``flock`` on ``<state_dir>/network.lock``
(two CLIs and a daemon serialise; a killed process releases it), and
follows one order: record in SQLite first, then plumb the kernel; undo
removes from the kernel after the record is gone. So a crash at any line
leaves either a record whose plumbing is missing (repaired or undone by
``reconcile``/``fix``) or kernel objects no record claims (found by
``check``, removed by ``fix``), never an address handed out twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from isobox.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from isobox.linux.lazylog import get_logger
from isobox.network import ipam
from isobox.network.core import ManagerCore
from isobox.network.files import hosts_for, resolv_conf_for
from isobox.network.model import (
    BRIDGE_NAME_OPTION,
    DRIVER_BRIDGE,
    DRIVER_HOST,
    DRIVER_NULL,
    EndpointInfo,
    Network,
    PortBinding,
    PortSpec,
    check_mac,
    tap_mac,
)
from isobox.network.naming import check_network_name, new_id
from isobox.network.netlink import TapRequest, VethRequest, check_ifname
from isobox.network.ports import plan_ports
from isobox.network.store import subnet_of

log = get_logger(__name__)


class NetworkManager(ManagerCore):
    """Networks, endpoints, published ports and DNS for the engine (see the module doc)."""

    def inspect(self, ref: str) -> dict[str, object]:
        net = self.get(ref)
        eps = self.store.endpoints(net.id)
        return net.inspect({e.container_id: e.inspect_entry() for e in eps})

    def create_network(self, name: str, *, driver: str = DRIVER_BRIDGE, subnet: str = "",
                       gateway: str = "", ip_range: str = "", internal: bool = False,
                       labels: Mapping[str, str] | None = None,
                       options: Mapping[str, str] | None = None) -> Network:
        check_network_name(name)
        if driver != DRIVER_BRIDGE:
            raise InvalidArgument(f"driver {driver!r} is not supported: only bridge")
        if (gateway or ip_range) and not subnet:
            raise InvalidArgument("gateway and ip-range need a subnet")
        opts = dict(options or {})
        self._ensure_predefined()
        with self.locked():
            if any(n.name == name for n in self.store.networks()):
                raise AlreadyExists(f"network with name {name} already exists")
            if subnet:
                sub = ipam.parse_subnet(subnet, gateway, ip_range)
                for other in self.store.networks():
                    if other.subnet and sub.network.overlaps(ipam.Net(other.subnet)):
                        raise Conflict(f"Pool overlaps with other one on this address space "
                                       f"(network {other.name}, {other.subnet})")
            else:
                sub = ipam.parse_subnet(str(self._free_subnet()))
            net_id = new_id()
            bridge = check_ifname(opts.get(BRIDGE_NAME_OPTION) or self.names.bridge(net_id))
            if bridge in self.links.link_kinds():
                raise Conflict(f"interface {bridge} already exists on the host")
            net = Network(id=net_id, name=name, driver=DRIVER_BRIDGE, created=time.time(),
                          bridge=bridge, subnet=sub.cidr, gateway=str(sub.gateway),
                          ip_range=str(sub.ip_range) if ip_range else "", internal=internal,
                          options=opts, labels=dict(labels or {}))
            self.store.add_network(net)
            try:
                self._plumb(net)
                self._sync_dns()
            except BaseException:
                self.store.remove_network(net.id)
                try:
                    self._unplumb(net)
                except Exception as exc:  # check/fix will find what is left
                    log.warning("undoing network %s: %s", name, exc)
                raise
        return net

    def remove_network(self, ref: str) -> None:
        with self.locked():
            net = self.get(ref)
            if net.predefined:
                raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
            self.store.remove_network(net.id)  # refuses while endpoints exist
            self._unplumb(net)
            self._sync_dns()
            self._restore_forwarding()

    def prune(self, labels: Mapping[str, str | None] | None = None) -> list[str]:
        """Remove user networks without endpoints (those carrying every label
        in ``labels``; a None value matches any value). Returns their names."""
        removed = []
        with self.locked():
            for net in self.networks():
                if net.predefined or self.store.endpoints(net.id):
                    continue
                if labels and any(k not in net.labels or (v is not None and net.labels[k] != v)
                                  for k, v in labels.items()):
                    continue
                self.remove_network(net.id)
                removed.append(net.name)
        return removed

    # -- endpoints ------------------------------------------------------------------------

    def connect(self, endpoint_id: str, network: str, netns_path: str, *,
                container_id: str | None = None, container_name: str = "",
                ip: str | None = None, aliases: Sequence[str] = (), mac: str | None = None,
                ifname: str | None = None) -> EndpointInfo:
        """Attach the network namespace at ``netns_path`` to a network.

        The address is leased (and the endpoint recorded, state ``creating``)
        before the veth pair is made; a crash after that leaves a record for
        ``reconcile``/``fix``; connecting again with the same ``endpoint_id``
        first undoes such a half-made endpoint. ``aliases`` are the names the
        embedded DNS answers on this network (pass the container's name and
        short id too: Docker's DNSNames). ``ifname`` None: the first free
        ethN. The default route goes through this network's gateway unless
        the namespace has one (the first network wins, as in Docker);
        internal networks give none."""
        if not endpoint_id or "/" in endpoint_id or ":" in endpoint_id:
            raise InvalidArgument(f"invalid endpoint id {endpoint_id!r}")
        if ifname is not None:
            check_ifname(ifname)
        mac = check_mac(mac) if mac else None
        with self.locked():
            net = self.get(network)
            prior = self.store.endpoint(endpoint_id)
            if prior is not None and self.store.endpoint_states().get(endpoint_id) == "creating":
                self._teardown(prior)  # a connect killed half-way: start again
            if not os.path.exists(netns_path):
                raise NotFound(f"network namespace {netns_path} does not exist")
            others = self.store.endpoints(netns=netns_path)
            special = {DRIVER_HOST, DRIVER_NULL}
            if others and (net.driver in special or any(
                    self.get(e.network_id).driver in special for e in others)):
                raise Conflict("container cannot be disconnected from host network or "
                               "connected to host network (or to none with other networks)")
            draft = EndpointInfo(id=endpoint_id, network_id=net.id, network=net.name,
                                 container_id=container_id or endpoint_id,
                                 container_name=container_name, netns=netns_path,
                                 ifname=ifname or "", host_ifname="", ip="", prefixlen=0,
                                 gateway="", mac=mac or "", aliases=tuple(aliases))
            if (ip or aliases) and not net.user_defined:
                raise InvalidArgument("user specified IP address and network-scoped aliases "
                                      "are supported on user defined networks only")
            if not net.is_bridge:
                if ip or mac or aliases:
                    raise InvalidArgument(f"network {net.name} takes no address, MAC or alias")
                ep = self.store.reserve_endpoint(draft, None, None)
                if net.driver == DRIVER_NULL:
                    self.links.netns_up(netns_path)
                self.store.mark_ready(ep.id)
                return ep
            net = self._ensure_plumbed(net)
            host_if = self.names.veth(endpoint_id)
            ep = self.store.reserve_endpoint(replace(draft, host_ifname=host_if),
                                             subnet_of(net), ip)

            def plumb(ep: EndpointInfo) -> None:
                chosen = self.links.add_veth(VethRequest(
                    bridge=net.bridge, host_ifname=host_if, netns=netns_path, ifname=ifname,
                    ip=ep.ip, prefixlen=ep.prefixlen, mac=ep.mac,
                    gateway=None if net.internal else net.gateway))
                self.store.set_ifname(ep.id, chosen)

            return self._complete(ep, net, aliases, plumb)

    def _complete(self, ep: EndpointInfo, net: Network, aliases: Sequence[str],
                  plumb: Callable[[EndpointInfo], None]) -> EndpointInfo:
        """Make the endpoint's link, mark it ready, update DNS; a failure
        undoes the whole endpoint (lease included) before it propagates."""
        try:
            plumb(ep)
            self.store.mark_ready(ep.id)
            if net.user_defined and aliases:
                self._sync_dns()
        except BaseException:
            try:
                self._teardown(ep)
            except Exception as exc:  # the first error matters; check/fix the rest
                log.warning("undoing endpoint %s: %s", ep.id, exc)
            raise
        found = self.store.endpoint(ep.id)
        assert found is not None
        return found

    def check_tap(self, network: str) -> Network:
        """The network, if a VM-isolated container can join it through a tap:
        bridge networks only. ``host`` is refused (a VM has its own kernel and
        cannot share the host's network stack); ``none`` needs no tap."""
        net = self.get(network)
        if net.driver == DRIVER_HOST:
            raise InvalidArgument("a VM-isolated container cannot use the host network: a VM "
                                  "has a network stack of its own (use a bridge network, or "
                                  "none)")
        if not net.is_bridge:
            raise InvalidArgument(f"network {net.name} takes no tap: a VM on it needs no NIC")
        return net

    def connect_tap(self, endpoint_id: str, network: str, *, container_id: str | None = None,
                    container_name: str = "", ip: str | None = None,
                    aliases: Sequence[str] = (), mac: str | None = None) -> EndpointInfo:
        """A VM's NIC on a bridge network: a persistent tap on the network's
        bridge, for the VMM to open before the VM boots.

        The same order as ``connect``: the address is leased and the endpoint
        recorded (state ``creating``) before the tap exists, undone on
        failure, repaired by ``reconcile``/``fix`` after a crash. The tap is
        named from the endpoint id (``Names.tap``), owned by root, single
        queue, up, and carries its own MAC (``tap_mac``); the returned
        endpoint's ``mac`` (given, or derived from the address as for veths)
        is the guest's. ``ip``, ``aliases``: as for ``connect``."""
        if not endpoint_id or "/" in endpoint_id or ":" in endpoint_id:
            raise InvalidArgument(f"invalid endpoint id {endpoint_id!r}")
        mac = check_mac(mac) if mac else None
        with self.locked():
            net = self.check_tap(network)
            prior = self.store.endpoint(endpoint_id)
            if prior is not None and self.store.endpoint_states().get(endpoint_id) == "creating":
                self._teardown(prior)  # a connect killed half-way: start again
            if (ip or aliases) and not net.user_defined:
                raise InvalidArgument("user specified IP address and network-scoped aliases "
                                      "are supported on user defined networks only")
            net = self._ensure_plumbed(net)
            draft = EndpointInfo(id=endpoint_id, network_id=net.id, network=net.name,
                                 container_id=container_id or endpoint_id,
                                 container_name=container_name, netns="", ifname="",
                                 host_ifname=self.names.tap(endpoint_id), ip="", prefixlen=0,
                                 gateway="", mac=mac or "", aliases=tuple(aliases))
            ep = self.store.reserve_endpoint(draft, subnet_of(net), ip)
            return self._complete(ep, net, aliases, lambda ep: self.links.add_tap(TapRequest(
                bridge=net.bridge, ifname=ep.host_ifname, mac=tap_mac(ep.mac), mtu=net.mtu)))

    def disconnect(self, endpoint_id: str) -> None:
        """Detach and forget the endpoint: its port rules, veth pair or tap, lease."""
        with self.locked():
            self._teardown(self.endpoint(endpoint_id))

    # -- published ports ---------------------------------------------------------------

    def publish(self, endpoint_id: str, host_ip: str, host_port: int, container_port: int,
                proto: str = "tcp") -> PortBinding:
        return self.publish_many(endpoint_id, [PortSpec(container_port, host_port, host_ip,
                                                        proto)])[0]

    def publish_many(self, endpoint_id: str, specs: Sequence[PortSpec]) -> list[PortBinding]:
        """Publish container ports on the host (DNAT to the endpoint's address:
        a container's veth or a VM's tap alike). Every port is checked (free
        on the host, not published already) before anything changes."""
        with self.locked():
            ep = self.endpoint(endpoint_id)
            if not ep.ip:
                raise InvalidArgument(f"endpoint {endpoint_id} has no address to publish to")
            if self.get(ep.network_id).internal:
                raise InvalidArgument(f"network {ep.network} is internal: no port can be "
                                      "published to it")
            bindings = plan_ports(ep, specs, self.store, self.port_checker)
            self.store.add_ports(bindings)
            try:
                self.firewall.add_ports(bindings)
            except BaseException:
                try:  # rules never outlive their rows (teardown relies on it)
                    self.firewall.remove_ports(ep.id, bindings)
                except Exception as exc:  # check/fix will find them
                    log.warning("undoing ports of %s: %s", ep.id, exc)
                self.store.remove_ports(ep.id, [(b.host_ip, b.host_port, b.proto)
                                                for b in bindings])
                raise
            return bindings

    def unpublish(self, endpoint_id: str, bindings: Sequence[PortBinding] | None = None) -> None:
        with self.locked():
            self.firewall.remove_ports(endpoint_id, bindings)
            keys = None if bindings is None else [(b.host_ip, b.host_port, b.proto)
                                                  for b in bindings]
            self.store.remove_ports(endpoint_id, keys)

    def ports(self, endpoint_id: str | None = None) -> list[PortBinding]:
        return self.store.ports(endpoint_id)

    # -- DNS ---------------------------------------------------------------------------------

    def set_dns_records(self, network: str, records: Mapping[str, str | Iterable[str]]) -> None:
        """Names the embedded DNS answers on a user-defined network, besides
        its endpoints' aliases: {name: ip or [ips]} (replaces the last set)."""
        with self.locked():
            net = self.get(network)
            if not net.user_defined:
                raise InvalidArgument(f"network {net.name} has no embedded DNS "
                                      "(only user-defined bridge networks do)")
            self.store.set_records(net.id, {k: [v] if isinstance(v, str) else list(v)
                                            for k, v in records.items()})
            self._sync_dns()

    def resolv_conf(self, network: str | None, *, dns: Sequence[str] = (),
                    dns_search: Sequence[str] = (), dns_options: Sequence[str] = ()) -> str:
        """The container's /etc/resolv.conf for its first network."""
        net = self.get(network) if network else None
        return resolv_conf_for(net, self.host_resolv_conf(), dns=dns, dns_search=dns_search,
                               dns_options=dns_options)

    def hosts(self, hostname: str, endpoints: Sequence[EndpointInfo] = (), *,
              domainname: str = "", extra_hosts: Sequence[str] = ()) -> str:
        """The container's /etc/hosts; ``host-gateway`` is the first endpoint's gateway."""
        gateway = next((e.gateway for e in endpoints if e.gateway), "")
        return hosts_for(hostname, [e.ip for e in endpoints], domainname=domainname,
                         extra_hosts=extra_hosts, host_gateway=gateway)

    # -- recovery ------------------------------------------------------------------------------

    def reconcile(self, live_endpoint_ids: Iterable[str]) -> list[str]:
        """Undo every endpoint the caller does not know as live (a container
        gone, or a connect killed half-way); returns the ids released. For
        the engine's start-up: it also starts the DNS server again when user
        networks exist (after a reboot, say)."""
        live = set(live_endpoint_ids)
        released = []
        with self.locked():
            for ep in self.store.endpoints():
                if ep.id not in live:
                    self._teardown(ep)
                    released.append(ep.id)
            self.store.drop_orphan_leases()
            self._sync_dns()
        return released

    def diagnose(self) -> list[str]:
        """Host settings that would break container networking (not ours to
        change): a forward hook dropping by default, iptables-legacy."""
        from isobox.network.nft import host_forward_warnings

        return host_forward_warnings(self.firewall.table)

    def check(self) -> list[str]:
        from isobox.network.leaks import find_leftovers

        with self.locked():
            return [str(item) for item in find_leftovers(self)]

    def fix(self) -> list[str]:
        from isobox.network.leaks import find_leftovers

        done = []
        with self.locked():
            for item in find_leftovers(self):
                item.fix()
                done.append(str(item))
        return done

    def destroy(self) -> None:
        """Remove everything this manager made on the host: endpoints, bridges,
        the nftables table, the DNS server; forwarding back off if we turned
        it on. The records of user networks go too (for tests and uninstall)."""
        with self.locked():
            for ep in self.store.endpoints():
                self._teardown(ep)
            for net in self.store.networks():
                if net.is_bridge:
                    self.links.delete_link(net.bridge)
                if not net.predefined:
                    self.store.remove_network(net.id)
            self.firewall.delete_table()
            self.dns.stop()
            self._restore_forwarding()
