"""What ``check`` finds and ``fix`` undoes: kernel objects no record claims
(veths, taps, bridges, nftables rules), records whose kernel objects are
gone, and half-made endpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from isobox.network.nft import port_tag

if TYPE_CHECKING:
    from isobox.network.core import ManagerCore


@dataclass(frozen=True)
class Leftover:
    what: str
    fix: Callable[[], object]

    def __str__(self) -> str:
        return self.what


def _delete_link(mgr: ManagerCore, name: str) -> None:
    mgr.links.delete_link(name)
    mgr.firewall.remove_bridge(name)


def find_leftovers(mgr: ManagerCore) -> list[Leftover]:
    out: list[Leftover] = []
    store, links, fw = mgr.store, mgr.links, mgr.firewall
    kinds = links.link_kinds()
    nets = {n.id: n for n in store.networks()}
    net_bridges = {n.bridge for n in nets.values() if n.bridge}
    eps = {e.id: e for e in store.endpoints()}
    states = store.endpoint_states()
    ep_links = {e.host_ifname for e in eps.values() if e.host_ifname}

    for name in sorted(kinds):
        if name in ep_links:
            continue
        if mgr.names.is_our_veth(name):
            out.append(Leftover(f"veth {name} has no endpoint", partial(_delete_link, mgr, name)))
        elif mgr.names.is_our_tap(name):
            out.append(Leftover(f"tap {name} has no endpoint", partial(_delete_link, mgr, name)))
    ours = {n for n, k in kinds.items() if k == "bridge" and mgr.names.is_our_bridge(n)}
    for name in sorted((fw.bridges() | ours) - net_bridges):
        out.append(Leftover(f"bridge {name} belongs to no network",
                            partial(_delete_link, mgr, name)))

    tags = fw.tags()
    bindings = {port_tag(b): b for b in store.ports()}
    for tag in sorted(tags):
        kind, _, rest = tag.partition(":")
        stale = ((kind == "net" and rest not in nets)
                 or (kind == "ep" and (rest.split(":", 1)[0] not in eps or tag not in bindings)))
        if stale:
            out.append(Leftover(f"nftables rules {tag!r} belong to nothing",
                                partial(fw.remove_tags, [tag])))
    for tag, binding in bindings.items():
        if tag not in tags:
            out.append(Leftover(f"published port {binding} has no nftables rule",
                                partial(fw.add_ports, [binding])))
    for net in nets.values():
        if net.is_bridge and net.bridge in kinds and f"net:{net.id}" not in tags:
            out.append(Leftover(f"network {net.name} has no nftables rules",
                                partial(mgr._plumb, net)))

    for net_id, ip, ep_id in store.orphan_leases():
        out.append(Leftover(f"lease {ip} on network {net_id[:12]} has no endpoint ({ep_id})",
                            store.drop_orphan_leases))
    for ep in eps.values():
        if states.get(ep.id) == "creating":
            out.append(Leftover(f"endpoint {ep.id} was left half-connected",
                                partial(mgr._teardown, ep)))
        elif ep.host_ifname and ep.host_ifname not in kinds:
            why = "veth (namespace gone?)" if ep.kind == "veth" else "tap"
            out.append(Leftover(f"endpoint {ep.id} lost its {why}", partial(mgr._teardown, ep)))

    want_dns = any(n.user_defined for n in nets.values())
    if want_dns != mgr.dns.running():
        state = "is not running" if want_dns else "runs without a user network"
        out.append(Leftover(f"the DNS server {state}", mgr._sync_dns))
    return out
