"""The manager's logic over fakes: no root, no kernel."""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest
from netfakes import FakeDns, FakeFirewall, FakeLinks, FakeSysctl

from isobox.errors import AlreadyExists, Conflict, InvalidArgument, IsoboxError, NotFound
from isobox.network import EndpointInfo, NetworkManager, PortSpec
from isobox.network.store import subnet_of


class Ports:
    def __init__(self, busy: set[int] | None = None) -> None:
        self.busy = busy or set()
        self.next = itertools.count(40000)

    def __call__(self, host_ip: str, port: int, proto: str) -> int:
        if port in self.busy:
            raise Conflict(f"Bind for {host_ip}:{port} failed: port is already allocated")
        return port or next(self.next)


class World:
    def __init__(self, tmp: Path, forward: str = "0") -> None:
        self.tmp = tmp
        self.links, self.fw, self.sysctl, self.dns = (FakeLinks(), FakeFirewall(),
                                                      FakeSysctl(forward), FakeDns())
        self.ports = Ports()
        resolv = tmp / "resolv.conf"
        resolv.write_text("nameserver 172.17.5.5\nnameserver 127.0.0.53\nsearch corp\n")
        self.mgr = NetworkManager(str(tmp / "state"), links=self.links, firewall=self.fw,
                                  sysctl=self.sysctl, dns=self.dns, port_checker=self.ports,
                                  resolv_conf=str(resolv))
        self.count = 0

    def netns(self) -> str:
        self.count += 1
        path = self.tmp / f"ns{self.count}"
        path.touch()
        return str(path)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def test_predefined_networks_and_subnet_choice(w: World) -> None:
    nets = {n.name: n for n in w.mgr.networks()}
    assert set(nets) == {"bridge", "host", "none"}
    # 172.17/16 holds the host's nameserver: skipped, as Docker does.
    assert nets["bridge"].subnet == "172.18.0.0/16"
    assert nets["bridge"].bridge == "isobox0" and nets["bridge"].gateway == "172.18.0.1"
    assert w.links.kinds.get("isobox0") is None  # plumbed lazily
    assert w.mgr.upstreams() == ["172.17.5.5", "127.0.0.53"]
    user = w.mgr.create_network("u")
    assert user.subnet == "172.19.0.0/16" and user.bridge == f"isobox-{user.id[:8]}"
    assert w.mgr.get(user.id[:6]) == user and w.mgr.get(user.id) == user
    with pytest.raises(NotFound):
        w.mgr.get("nope")


def test_create_validates_and_refuses_overlaps(w: World) -> None:
    net = w.mgr.create_network("a", subnet="10.1.0.0/24", gateway="10.1.0.254",
                               ip_range="10.1.0.128/25", internal=True,
                               options={"com.docker.network.bridge.name": "mybr0"})
    assert (net.bridge, net.gateway, net.ip_range) == ("mybr0", "10.1.0.254", "10.1.0.128/25")
    assert w.fw.rules[f"net:{net.id}"] == 2
    assert w.sysctl.values["net.ipv4.conf.mybr0.route_localnet"] == "1"
    assert w.sysctl.values["net.ipv4.ip_forward"] == "0"  # internal only: not needed
    with pytest.raises(AlreadyExists):
        w.mgr.create_network("a", subnet="10.2.0.0/24")
    with pytest.raises(Conflict, match="overlaps"):
        w.mgr.create_network("b", subnet="10.1.0.0/16")
    for bad in ({"subnet": "10.3.0.0/24", "gateway": "10.4.0.1"},
                {"subnet": "10.3.0.0/24", "ip_range": "10.3.1.0/25"},
                {"subnet": "nonsense"}, {"gateway": "10.3.0.1"}):
        with pytest.raises(InvalidArgument):
            w.mgr.create_network("c", **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        w.mgr.create_network("bad name!")
    with pytest.raises(InvalidArgument):
        w.mgr.create_network("d", driver="overlay")


def test_ip_forward_enabled_once_and_restored_only_if_we_changed_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.mgr.create_network("a", subnet="10.1.0.0/24")
    assert w.sysctl.values["net.ipv4.ip_forward"] == "1"
    w.mgr.create_network("b", subnet="10.2.0.0/24")
    w.mgr.remove_network("a")
    assert w.sysctl.values["net.ipv4.ip_forward"] == "1"  # b still needs it
    w.mgr.remove_network("b")
    assert w.sysctl.values["net.ipv4.ip_forward"] == "0"
    (tmp_path / "on").mkdir()
    on = World(tmp_path / "on", forward="1")
    on.mgr.create_network("a", subnet="10.1.0.0/24")
    on.mgr.remove_network("a")
    on.mgr.destroy()
    assert on.sysctl.values["net.ipv4.ip_forward"] == "1"  # the host had it on


def test_connect_leases_addresses_and_honours_requests(w: World) -> None:
    w.mgr.create_network("n", subnet="10.5.0.0/29")  # .1 gateway, .2-.6 usable
    a = w.mgr.connect("ea", "n", w.netns(), container_name="a", aliases=("a",))
    assert (a.ip, a.mac, a.ifname, a.prefixlen) == ("10.5.0.2", "02:42:0a:05:00:02", "eth0", 29)
    b = w.mgr.connect("eb", "n", w.netns(), ip="10.5.0.6", mac="02:00:00:00:00:01")
    assert (b.ip, b.mac) == ("10.5.0.6", "02:00:00:00:00:01")
    with pytest.raises(Conflict, match="already in use"):
        w.mgr.connect("ec", "n", w.netns(), ip="10.5.0.6")
    for bad in ("10.5.0.1", "10.5.0.7", "10.6.0.2", "x"):
        with pytest.raises(InvalidArgument):
            w.mgr.connect("ec", "n", w.netns(), ip=bad)
    with pytest.raises(Conflict):
        w.mgr.connect("ea2", "n", a.netns, container_id="ea")  # same container twice
    ips = {w.mgr.connect(f"e{i}", "n", w.netns()).ip for i in range(3)}
    assert ips == {"10.5.0.3", "10.5.0.4", "10.5.0.5"}
    with pytest.raises(IsoboxError, match="no free address"):
        w.mgr.connect("full", "n", w.netns())
    with pytest.raises(NotFound):
        w.mgr.endpoint("full")  # the failed connect left nothing
    w.mgr.disconnect("eb")
    assert w.mgr.connect("again", "n", w.netns()).ip == "10.5.0.6"
    assert w.dns.zones[w.mgr.get("n").id].records == {"a": ["10.5.0.2"]}
    with pytest.raises(NotFound):
        w.mgr.connect("x", "n", str(w.tmp / "missing"))


def test_failed_plumbing_releases_the_lease(w: World) -> None:
    w.mgr.create_network("n", subnet="10.5.0.0/24")
    w.links.fail_veth = IsoboxError("boom")
    with pytest.raises(IsoboxError, match="boom"):
        w.mgr.connect("ea", "n", w.netns())
    w.links.fail_veth = None
    assert w.mgr.store.leases(w.mgr.get("n").id) == []
    assert w.mgr.connect("eb", "n", w.netns()).ip == "10.5.0.2"


def test_second_network_keeps_the_first_default_route(w: World) -> None:
    w.mgr.create_network("one", subnet="10.1.0.0/24")
    w.mgr.create_network("two", subnet="10.2.0.0/24")
    w.mgr.create_network("shut", subnet="10.3.0.0/24", internal=True)
    ns = w.netns()
    w.mgr.connect("e0", "shut", ns)
    assert ns not in w.links.routes  # internal: no default route
    w.mgr.connect("e1", "one", ns)
    e2 = w.mgr.connect("e2", "two", ns)
    assert e2.ifname == "eth2" and w.links.routes[ns] == "10.1.0.1"
    w.links.routes.pop(ns)  # the kernel drops it with eth1
    w.mgr.disconnect("e1")
    assert w.links.routes[ns] == "10.2.0.1"


def test_none_and_host_networks(w: World) -> None:
    ns = w.netns()
    ep = w.mgr.connect("e", "none", ns)
    assert ep.ip == "" and ns in w.links.lo_up and w.links.veths == {}
    with pytest.raises(Conflict):
        w.mgr.connect("e2", "bridge", ns)
    with pytest.raises(InvalidArgument):
        w.mgr.connect("e3", "host", w.netns(), mac="02:00:00:00:00:01")
    with pytest.raises(Conflict):
        w.mgr.remove_network("none")
    assert w.mgr.inspect("none")["Containers"] == {
        "e": {"Name": "", "EndpointID": "e", "MacAddress": "", "IPv4Address": "",
              "IPv6Address": ""}}


def test_publish_checks_everything_first(w: World) -> None:
    w.mgr.create_network("n", subnet="10.5.0.0/24")
    ep = w.mgr.connect("e", "n", w.netns())
    w.ports.busy.add(8080)
    with pytest.raises(Conflict, match="8080"):
        w.mgr.publish_many("e", [PortSpec(80, 9090), PortSpec(81, 8080)])
    assert w.mgr.ports() == [] and not [t for t in w.fw.rules if t.startswith("ep:")]
    b1 = w.mgr.publish("e", "0.0.0.0", 9090, 80)
    b2 = w.mgr.publish("e", "127.0.0.1", 0, 53, "udp")
    assert (str(b1), str(b2)) == ("0.0.0.0:9090->80/tcp", "127.0.0.1:40000->53/udp")
    assert b1.docker_ports() == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9090"}]}
    with pytest.raises(Conflict):
        w.mgr.publish("e", "127.0.0.1", 9090, 81)  # 0.0.0.0:9090 covers it
    with pytest.raises(Conflict):
        w.mgr.publish_many("e", [PortSpec(1, 7000), PortSpec(2, 7000)])
    assert w.mgr.publish("e", "127.0.0.1", 9090, 81, "udp").host_port == 9090
    w.fw.fail_ports = IsoboxError("nft broke")
    with pytest.raises(IsoboxError):
        w.mgr.publish("e", "0.0.0.0", 7001, 1)
    w.fw.fail_ports = None
    assert len(w.mgr.ports("e")) == 3
    w.mgr.unpublish("e", [b1])
    assert len(w.mgr.ports("e")) == 2
    w.mgr.disconnect(ep.id)
    assert w.mgr.ports() == [] and not [t for t in w.fw.rules if t.startswith("ep:")]
    w.mgr.create_network("shut", subnet="10.6.0.0/24", internal=True)
    w.mgr.connect("i", "shut", w.netns())
    with pytest.raises(InvalidArgument, match="internal"):
        w.mgr.publish("i", "127.0.0.1", 0, 80)
    for bad in ({"container_port": 0}, {"container_port": 1, "proto": "icmp"},
                {"container_port": 1, "host_ip": "::1"}, {"container_port": 1, "host_port": -1}):
        with pytest.raises(InvalidArgument):
            PortSpec(**bad)  # type: ignore[arg-type]


def test_reconcile_check_fix(w: World) -> None:
    w.mgr.create_network("n", subnet="10.5.0.0/24")
    keep = w.mgr.connect("keep", "n", w.netns())
    gone = w.mgr.connect("gone", "n", w.netns())
    w.mgr.publish("gone", "0.0.0.0", 0, 80)
    assert w.mgr.check() == []
    w.links.kinds["isoboxv00000000"] = "veth"
    w.links.kinds["isobox-00000000"] = "bridge"
    w.fw.rules["net:feed"] = 1
    w.links.delete_link(keep.host_ifname)  # its namespace died
    problems = w.mgr.check()
    assert len(problems) == 4, problems
    assert w.mgr.reconcile(["keep"]) == ["gone"]
    assert gone.host_ifname not in w.links.kinds and w.mgr.ports() == []
    w.mgr.fix()
    assert w.mgr.check() == []
    assert w.mgr.endpoints() == []  # keep had lost its veth: fixed away


def test_prune_and_labels(w: World) -> None:
    w.mgr.create_network("a", subnet="10.1.0.0/24", labels={"env": "dev"})
    w.mgr.create_network("b", subnet="10.2.0.0/24", labels={"env": "prod"})
    w.mgr.create_network("c", subnet="10.3.0.0/24")
    w.mgr.connect("e", "c", w.netns())
    assert w.mgr.prune({"env": "dev"}) == ["a"]
    assert w.mgr.prune() == ["b"]
    assert [n.name for n in w.mgr.networks()] == ["bridge", "host", "none", "c"]


def test_dns_records_and_resolv_conf(w: World) -> None:
    net = w.mgr.create_network("n", subnet="10.5.0.0/24")
    assert w.dns.running() and w.dns.upstreams == ["172.17.5.5", "127.0.0.53"]
    w.mgr.connect("e", "n", w.netns(), aliases=("Web",))
    w.mgr.set_dns_records("n", {"db": "10.5.0.50", "web": ["10.5.0.51"]})
    assert w.dns.zones[net.id].records == {"db": ["10.5.0.50"], "web": ["10.5.0.51", "10.5.0.2"]}
    with pytest.raises(InvalidArgument):
        w.mgr.set_dns_records("bridge", {"x": "1.2.3.4"})
    assert w.mgr.resolv_conf("n") == "nameserver 10.5.0.1\nsearch corp\n"
    assert w.mgr.resolv_conf("bridge") == "nameserver 172.17.5.5\nsearch corp\n"
    w.mgr.disconnect("e")
    w.mgr.remove_network("n")
    assert not w.dns.running()


def test_destroy_removes_everything(w: World) -> None:
    w.mgr.create_network("n", subnet="10.5.0.0/24")
    w.mgr.connect("e", "n", w.netns())
    w.mgr.connect("d", "bridge", w.netns())
    w.mgr.destroy()
    assert w.links.kinds == {"lo": "", "eth0": ""} and w.fw.rules == {} and not w.dns.up
    assert [n.name for n in w.mgr.networks()] == ["bridge", "host", "none"]


def test_connect_again_after_a_crash_starts_over(w: World) -> None:
    net = w.mgr.create_network("n", subnet="10.5.0.0/24")
    ns = w.netns()
    draft = EndpointInfo(id="e", network_id=net.id, network="n", container_id="c",
                         container_name="", netns=ns, ifname="", host_ifname="isoboxv12345678",
                         ip="", prefixlen=0, gateway="", mac="")
    half = w.mgr.store.reserve_endpoint(draft, subnet_of(net), None)  # then the process died
    w.links.kinds[half.host_ifname] = "veth"
    assert any("half-connected" in p for p in w.mgr.check())
    ep = w.mgr.connect("e", "n", ns, container_id="c")
    assert ep.ip == half.ip and w.mgr.check() == []


def test_tap_endpoints_lease_plumb_publish_and_go(w: World) -> None:
    net = w.mgr.create_network("n", subnet="10.5.0.0/24", options={
        "com.docker.network.driver.mtu": "1400"})
    ep = w.mgr.connect_tap("t1", "n", container_id="vm1", container_name="vm",
                           aliases=("vm", "vm1"))
    assert (ep.ip, ep.prefixlen, ep.gateway, ep.mac) == ("10.5.0.2", 24, "10.5.0.1",
                                                         "02:42:0a:05:00:02")
    assert ep.kind == "tap" and ep.netns == "" and ep.host_ifname == w.mgr.names.tap("t1")
    tap = w.links.taps[ep.host_ifname]
    assert (tap.bridge, tap.mac, tap.mtu, tap.owner) == (net.bridge, "fe:42:0a:05:00:02", 1400, 0)
    assert w.dns.zones[net.id].records == {"vm": ["10.5.0.2"], "vm1": ["10.5.0.2"]}
    given = w.mgr.connect_tap("t2", "n", container_id="vm2", ip="10.5.0.9",
                              mac="fe:00:00:00:00:01")
    assert (given.ip, given.mac, w.links.taps[given.host_ifname].mac) == (
        "10.5.0.9", "fe:00:00:00:00:01", "fa:00:00:00:00:01")
    with pytest.raises(Conflict):
        w.mgr.connect_tap("t3", "n", container_id="vm1")  # one endpoint per network
    binding = w.mgr.publish("t1", "0.0.0.0", 0, 80)
    assert (binding.container_ip, binding.container_port) == ("10.5.0.2", 80)
    assert w.mgr.check() == []
    w.mgr.disconnect("t1")
    assert ep.host_ifname not in w.links.kinds and w.mgr.ports() == []
    assert [ip for ip, _ in w.mgr.store.leases(net.id)] == ["10.5.0.9"]
    # The default bridge: no aliases or fixed address, as for veths.
    assert w.mgr.connect_tap("t4", "bridge", container_id="vm4").gateway == "172.18.0.1"
    with pytest.raises(InvalidArgument):
        w.mgr.connect_tap("t5", "bridge", container_id="vm5", aliases=("x",))


def test_taps_refuse_host_and_none(w: World) -> None:
    with pytest.raises(InvalidArgument, match="host network"):
        w.mgr.connect_tap("t", "host")
    with pytest.raises(InvalidArgument, match="no tap"):
        w.mgr.connect_tap("t", "none")
    with pytest.raises(InvalidArgument, match="host network"):
        w.mgr.check_tap("host")
    assert w.mgr.check_tap("bridge").name == "bridge"
    assert w.mgr.endpoints() == [] and w.links.taps == {}


def test_failed_tap_releases_everything(w: World) -> None:
    net = w.mgr.create_network("n", subnet="10.5.0.0/24")
    w.links.fail_tap = IsoboxError("no /dev/net/tun")
    with pytest.raises(IsoboxError, match="tun"):
        w.mgr.connect_tap("t", "n", container_id="vm")
    w.links.fail_tap = None
    assert w.mgr.store.leases(net.id) == [] and w.mgr.endpoints() == []
    assert w.mgr.names.tap("t") not in w.links.kinds


def test_tap_leftovers_found_and_fixed(w: World) -> None:
    net = w.mgr.create_network("n", subnet="10.5.0.0/24")
    live = w.mgr.connect_tap("live", "n", container_id="vm-live")
    # A connect killed after the tap was made: the record says "creating".
    draft = EndpointInfo(id="half", network_id=net.id, network="n", container_id="vm-half",
                         container_name="", netns="", ifname="",
                         host_ifname=w.mgr.names.tap("half"), ip="", prefixlen=0, gateway="",
                         mac="")
    half = w.mgr.store.reserve_endpoint(draft, subnet_of(net), None)
    w.links.kinds[half.host_ifname] = "tun"
    stray = w.mgr.names.tap("stray")
    w.links.kinds[stray] = "tun"  # a tap no record claims
    lost = w.mgr.connect_tap("lost", "n", container_id="vm-lost")
    w.links.delete_link(lost.host_ifname)  # deleted behind our back
    found = w.mgr.check()
    assert any("half-connected" in f for f in found)
    assert any(f"tap {stray} has no endpoint" in f for f in found)
    assert any("lost its tap" in f for f in found)
    assert len(found) == 3, found
    # Connecting again with the same id starts over on the same address.
    again = w.mgr.connect_tap("half", "n", container_id="vm-half")
    assert again.ip == half.ip
    w.mgr.fix()
    assert w.mgr.check() == []
    assert {e.id for e in w.mgr.endpoints()} == {"live", "half"}
    assert stray not in w.links.kinds and live.host_ifname in w.links.taps
    assert w.mgr.reconcile(["live"]) == ["half"]
    assert set(w.links.taps) == {live.host_ifname}


def test_default_bridge_moves_off_a_subnet_taken_before_it_was_plumbed(w: World) -> None:
    bridge = w.mgr.get("bridge")
    assert bridge.subnet == "172.18.0.0/16" and not w.links.exists(bridge.bridge)
    # Another engine root's bridge took the subnet in the meantime.
    w.links.host_nets.append(ipaddress.IPv4Network("172.18.0.0/16"))
    ep = w.mgr.connect("e", "bridge", w.netns())
    moved = w.mgr.get("bridge")
    assert (moved.subnet, moved.gateway, ep.ip) == ("172.19.0.0/16", "172.19.0.1", "172.19.0.2")
    assert w.links.addrs[moved.bridge] == "172.19.0.1/16"
    # Plumbed and leased: it stays where it is from now on.
    w.links.delete_link(moved.bridge)
    w.links.host_nets.append(ipaddress.IPv4Network("172.19.0.0/16"))
    w.mgr.connect("e2", "bridge", w.netns())
    assert w.mgr.get("bridge").subnet == "172.19.0.0/16"
