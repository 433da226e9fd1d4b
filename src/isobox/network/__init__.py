"""Container networking: bridges and veth pairs over netlink (pyroute2),
address leases in SQLite, NAT/isolation/published ports in one nftables
table, and an embedded DNS server for user-defined networks.

The engine drives it through one object::

    with NetworkManager("/var/lib/isobox/network") as nets:
        nets.reconcile(live_endpoint_ids)           # at start-up
        nets.create_network("web", subnet="10.10.0.0/24")
        ep = nets.connect(new_id(), "web", f"/proc/{pid}/ns/net",
                          container_id=cid, container_name="api", aliases=("api", cid[:12]))
        nets.publish(ep.id, "0.0.0.0", 8080, 80, "tcp")
        resolv = nets.resolv_conf("web"); hosts = nets.hosts("api", [ep])
        # a VM's NIC: a persistent tap on the bridge, made before the VM boots
        vm = nets.connect_tap(new_id(), "web", container_id=vid, container_name="vm")
        nets.disconnect(vm.id)                      # veths and taps alike

Decisions (measured on this project's 2-core VM, see ``benchmarks/network.py``):

* nftables through the ``nft`` command with JSON (``nft -j -f -``), not
  libnftables through ctypes: rulesets are plain data built and tested
  without root, batches are atomic, and the one ctypes module stays in
  ``isobox.linux``. A call costs one process start (5-12 ms); an operation
  makes one or two. ``NftRunner`` is the seam for an in-process runner.
  Everything lives in ``table inet isobox``: the host's rules are never
  read or changed, and teardown is one ``delete table``.
* Published ports are DNAT rules, also for 127.0.0.1 (``route_localnet=1``
  on the bridge, masquerade of 127.0.0.0/8 out of it, and a raw-prerouting
  drop of 127.0.0.0/8 arriving from the bridge so containers cannot reach
  the host's loopback services through it). No userland proxy: against a
  docker-proxy-style process, a new connection plus a small exchange took
  0.39 ms instead of 0.88 ms (median) and one stream ran at ~1500 MiB/s
  instead of ~740 MiB/s, with no process per port to keep alive in a
  daemonless engine. The cost: the port is checked free by binding it,
  then released, so a later host listener on it is shadowed by the DNAT.
* DNS: one server process per host (``isobox.network.dnsserver``) listening
  on every user-defined network's gateway address, port 53, UDP and TCP,
  instead of Docker's 127.0.0.11 inside each container (a process or
  thread per namespace). It answers a network's names only to clients of
  that network, and forwards the rest to the host's resolvers, which it
  can reach even when they are on the host's loopback.
"""

from __future__ import annotations

from isobox.network.dnsctl import DnsProcess, DnsService, DnsZone
from isobox.network.files import hosts_for, resolv_conf_for
from isobox.network.host import ProcSysctl, ResolvConf, Sysctl, read_resolv_conf
from isobox.network.ipam import DEFAULT_POOLS, Pool
from isobox.network.manager import NetworkManager
from isobox.network.model import EndpointInfo, Network, PortBinding, PortSpec
from isobox.network.naming import new_id
from isobox.network.netlink import Links, NetlinkLinks, TapRequest, VethRequest
from isobox.network.nft import Firewall, NetworkRules, NftFirewall, firewall_backend

__all__ = [
    "DEFAULT_POOLS",
    "DnsProcess",
    "DnsService",
    "DnsZone",
    "EndpointInfo",
    "Firewall",
    "Links",
    "NetlinkLinks",
    "Network",
    "NetworkManager",
    "NetworkRules",
    "NftFirewall",
    "Pool",
    "PortBinding",
    "PortSpec",
    "ProcSysctl",
    "ResolvConf",
    "Sysctl",
    "TapRequest",
    "VethRequest",
    "firewall_backend",
    "hosts_for",
    "new_id",
    "read_resolv_conf",
    "resolv_conf_for",
]
