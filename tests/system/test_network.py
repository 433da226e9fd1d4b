"""Networks end to end, in namespaces the tests make: two containers talk by
IP and by name, ports published on the host, internal networks and
isolation, clean errors for taken ports. ``NetEnv`` asserts that nothing of
ours is left on the host after each test."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_network_support import PY, NetEnv, sh

from isobox.errors import Conflict, InvalidArgument
from isobox.network import dnswire


@pytest.fixture
def env(tmp_path: Path) -> Iterator[NetEnv]:
    with NetEnv(tmp_path) as e:
        yield e


def test_two_containers_by_ip_and_by_name(env: NetEnv) -> None:
    mgr = env.manager()
    net = mgr.create_network("app", subnet=env.subnet(1), labels={"tier": "web"})
    web_ns, client_ns = env.netns(), env.netns()
    bridge_mac = Path(f"/sys/class/net/{net.bridge}/address").read_text()
    web = mgr.connect("ep-web", "app", web_ns, container_id="c-web", container_name="web",
                      aliases=("web", "www"))
    client = mgr.connect("ep-client", "app", client_ns, container_id="c-client",
                         container_name="client", aliases=("client",))
    assert (web.ip, client.ip) == (f"10.{env.octet}.1.2", f"10.{env.octet}.1.3")
    assert web.mac == f"02:42:0a:{env.octet:02x}:01:02"
    assert web.ifname == "eth0"
    link = env.run_in(web_ns, "ip", "-o", "link", "show", "eth0").stdout
    assert web.mac in link and "UP" in link
    assert "default via " + net.gateway in env.run_in(web_ns, "ip", "route").stdout

    env.http_server(web_ns, web.ip)
    assert env.fetch(client_ns, f"http://{web.ip}:8000/hello") == f"hello from {web.ip}\n"

    # By name, through the embedded DNS on the gateway, over UDP and TCP.
    assert env.dns(client_ns, net.gateway, "web") == (0, [web.ip])
    assert env.dns(client_ns, net.gateway, "WWW.", tcp=True) == (0, [web.ip])
    assert env.dns(client_ns, net.gateway, "web", qtype=dnswire.AAAA) == (0, [])
    rev = ".".join(reversed(web.ip.split("."))) + ".in-addr.arpa"
    assert env.dns(client_ns, net.gateway, rev, qtype=dnswire.PTR) == (0, ["web."])
    mgr.set_dns_records("app", {"db": "10.9.9.9", "web-1": [web.ip]})
    assert env.dns(client_ns, net.gateway, "db") == (0, ["10.9.9.9"])
    assert env.dns(client_ns, net.gateway, "web-1") == (0, [web.ip])
    # Everything else goes to the (fake, loopback) upstream.
    assert env.dns(client_ns, net.gateway, "outside.test") == (0, ["198.51.100.7"])
    assert env.dns(client_ns, net.gateway, "nothing.test")[0] == dnswire.NXDOMAIN
    assert "outside.test" in env.upstream.queries

    resolv = mgr.resolv_conf("app")
    assert resolv.splitlines()[0] == f"nameserver {net.gateway}"
    hosts = mgr.hosts("web", [web])
    assert f"{web.ip}\tweb" in hosts

    info = mgr.inspect("app")
    assert json.loads(json.dumps(info))["Containers"]["c-web"]["IPv4Address"] == \
        f"{web.ip}/24"
    assert info["Labels"] == {"tier": "web"}
    with pytest.raises(Conflict):
        mgr.remove_network("app")  # endpoints attached
    mgr.disconnect(web.id)
    # The bridge keeps its MAC as ports leave (the client's ARP entry stays good).
    assert Path(f"/sys/class/net/{net.bridge}/address").read_text() == bridge_mac
    assert env.dns(client_ns, net.gateway, "web")[0] == dnswire.NXDOMAIN  # forwarded
    assert env.fetch(client_ns, f"http://{web.ip}:8000/hello", timeout=1) is None
    mgr.disconnect(client.id)
    assert mgr.prune() == ["app"]
    assert not mgr.dns.running()


def test_published_port_from_the_host(env: NetEnv) -> None:
    mgr = env.manager()
    net = mgr.create_network("pub", subnet=env.subnet(2))
    ns = env.netns()
    ep = mgr.connect("ep-pub", "pub", ns, container_name="srv")
    env.http_server(ns, ep.ip, 80)
    binding = mgr.publish(ep.id, "0.0.0.0", 0, 80)
    assert binding.host_port > 0
    assert str(binding) == f"0.0.0.0:{binding.host_port}->80/tcp"
    fixed = mgr.publish(ep.id, "127.0.0.1", 0, 80)
    want = f"hello from {ep.ip}\n"
    assert env.fetch(None, f"http://127.0.0.1:{binding.host_port}/hello") == want
    assert env.fetch(None, f"http://{net.gateway}:{binding.host_port}/hello") == want
    assert env.fetch(None, f"http://127.0.0.1:{fixed.host_port}/hello") == want
    assert env.fetch(None, f"http://{net.gateway}:{fixed.host_port}/hello", timeout=1) is None
    assert sorted(map(str, mgr.ports(ep.id))) == sorted([str(binding), str(fixed)])
    # A second container on the same bridge reaches the port through the host.
    other_ns = env.netns()
    mgr.connect("ep-other", "pub", other_ns)
    assert env.fetch(other_ns, f"http://{net.gateway}:{binding.host_port}/hello") == want

    mgr.unpublish(ep.id, [binding])
    assert env.fetch(None, f"http://127.0.0.1:{binding.host_port}/hello", timeout=1) is None
    assert env.fetch(None, f"http://127.0.0.1:{fixed.host_port}/hello") == want
    mgr.disconnect(ep.id)
    assert mgr.ports() == []
    assert not [t for t in mgr.firewall.tags() if t.startswith("ep:")]


def test_port_taken_is_refused_before_any_change(env: NetEnv) -> None:
    mgr = env.manager()
    mgr.create_network("busy", subnet=env.subnet(3))
    ep = mgr.connect("ep-busy", "busy", env.netns())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        tags = mgr.firewall.tags()
        with pytest.raises(Conflict, match="already allocated"):
            mgr.publish(ep.id, "0.0.0.0", port, 80)
        with pytest.raises(Conflict):  # one bad port fails the batch
            from isobox.network import PortSpec
            mgr.publish_many(ep.id, [PortSpec(81, 0), PortSpec(80, port, "127.0.0.1")])
        assert mgr.firewall.tags() == tags
        assert mgr.ports() == []
    first = mgr.publish(ep.id, "127.0.0.1", 0, 80)
    with pytest.raises(Conflict):  # taken by our own publish
        mgr.publish(ep.id, "0.0.0.0", first.host_port, 81)
    assert mgr.ports() == [first]
    with pytest.raises(InvalidArgument):
        mgr.publish(ep.id, "192.0.2.250", 8080, 80)  # not an address of the host


def test_internal_network_has_no_way_out(env: NetEnv) -> None:
    # An "outside" namespace behind a veth from the host, standing in for
    # the world: reachable by routing through the host only.
    outside = env.netns()
    out_host, out_peer = f"{env.prefix}o0", f"{env.prefix}o1"
    env.links.append(out_host)
    base = f"10.{env.octet}.254"
    sh("ip", "link", "add", out_host, "type", "veth", "peer", "name", out_peer,
       "netns", env.ns_name(outside))
    sh("ip", "addr", "add", f"{base}.1/30", "dev", out_host)
    sh("ip", "link", "set", out_host, "up")
    env.run_in(outside, "ip", "addr", "add", f"{base}.2/30", "dev", out_peer)
    env.run_in(outside, "ip", "link", "set", out_peer, "up")
    env.run_in(outside, "ip", "link", "set", "lo", "up")
    env.http_server(outside, f"{base}.2")
    url = f"http://{base}.2:8000/hello"

    mgr = env.manager()
    mgr.create_network("open", subnet=env.subnet(4))
    closed = mgr.create_network("closed", subnet=env.subnet(5), internal=True)
    open_ns, closed_ns = env.netns(), env.netns()
    mgr.connect("ep-open", "open", open_ns)
    ep = mgr.connect("ep-closed", "closed", closed_ns)
    assert env.fetch(open_ns, url) == f"hello from {base}.2\n"  # masqueraded out
    assert "default" not in env.run_in(closed_ns, "ip", "route").stdout
    # Even with a route through the gateway, nothing is forwarded out.
    env.run_in(closed_ns, "ip", "route", "add", "default", "via", closed.gateway)
    assert env.fetch(closed_ns, url, timeout=1) is None
    listing = sh("nft", "list", "table", "inet", env.table).stdout
    masq = [ln for ln in listing.splitlines() if "masquerade" in ln and closed.subnet in ln
            and "ct status dnat" not in ln]
    assert masq == []
    # A loopback-only service on the host stays out of reach through the gateway.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        for target in (closed.gateway,):
            code = (f"import socket; s = socket.socket(); s.settimeout(1)\n"
                    f"s.connect(({target!r}, {port}))")
            assert env.run_in(closed_ns, PY, "-c", code, check=False).returncode != 0
    assert ep.ip.startswith(f"10.{env.octet}.5.")


def test_networks_are_isolated(env: NetEnv) -> None:
    mgr = env.manager()
    mgr.create_network("left", subnet=env.subnet(6))
    mgr.create_network("right", subnet=env.subnet(7))
    left_ns, right_ns, right2_ns = env.netns(), env.netns(), env.netns()
    mgr.connect("ep-l", "left", left_ns)
    right = mgr.connect("ep-r", "right", right_ns)
    mgr.connect("ep-r2", "right", right2_ns)
    env.http_server(right_ns, right.ip)
    url = f"http://{right.ip}:8000/hello"
    assert env.fetch(right2_ns, url) is not None           # same network: fine
    assert env.fetch(left_ns, url, timeout=1) is None       # across networks: dropped
    ping = env.run_in(left_ns, PY, "-c",
                      f"import socket; s = socket.socket(); s.settimeout(1); "
                      f"s.connect(({right.ip!r}, 8000))", check=False)
    assert ping.returncode != 0


def test_default_bridge_none_and_host(env: NetEnv) -> None:
    mgr = env.manager()
    names = {n.name: n for n in mgr.networks()}
    assert set(names) == {"bridge", "host", "none"}
    bridge = names["bridge"]
    assert bridge.bridge == f"{env.prefix}0" and bridge.subnet.startswith(f"10.{env.octet}.")
    ns = env.netns()
    ep = mgr.connect("ep-default", "bridge", ns)
    assert ep.ip and f"{env.prefix}0" in sh("ip", "-o", "link").stdout
    with pytest.raises(InvalidArgument):
        mgr.connect("ep-alias", "bridge", env.netns(), aliases=("x",))
    resolv = mgr.resolv_conf("bridge", dns=["192.0.2.53"])
    assert resolv.splitlines()[0] == "nameserver 192.0.2.53"
    none_ns = env.netns()
    mgr.connect("ep-none", "none", none_ns)
    assert "UP" in env.run_in(none_ns, "ip", "-o", "link", "show", "lo").stdout
    with pytest.raises(Conflict):
        mgr.connect("ep-none2", "bridge", none_ns)
    with pytest.raises(Conflict):
        mgr.remove_network("bridge")
    assert mgr.inspect("none")["Driver"] == "null"
    assert mgr.check() == []


def test_tap_endpoint_for_a_vm(env: NetEnv) -> None:
    """A VM's NIC: a persistent tap on the network's bridge, made before any
    process exists. No VM boots here: the link and the store tell."""
    mgr = env.manager()
    net = mgr.create_network("vms", subnet=env.subnet(8))
    ep = mgr.connect_tap("ep-vm", "vms", container_id="c-vm", container_name="vm",
                         aliases=("vm",))
    assert (ep.ip, ep.prefixlen, ep.gateway) == (f"10.{env.octet}.8.2", 24, net.gateway)
    assert ep.mac == f"02:42:0a:{env.octet:02x}:08:02" and ep.kind == "tap"
    tap = ep.host_ifname
    assert tap.startswith(f"{env.prefix}t") and len(tap) == 15
    detail = sh("ip", "-d", "link", "show", tap).stdout
    assert "tun type tap" in detail and "persist on" in detail and "user root" in detail
    assert "multi_queue" not in detail
    assert f"master {net.bridge}" in detail and ",UP" in detail.split(">")[0]
    assert Path(f"/sys/class/net/{tap}/address").read_text().strip() == "fe" + ep.mac[2:]
    assert (ep.ip, ep.id) in mgr.store.leases(net.id)
    client_ns = env.netns()  # a container on the same network finds the VM by name
    mgr.connect("ep-client", "vms", client_ns)
    assert env.dns(client_ns, net.gateway, "vm") == (0, [ep.ip])
    binding = mgr.publish(ep.id, "127.0.0.1", 0, 80)
    listing = sh("nft", "list", "table", "inet", env.table).stdout
    assert f"dnat ip to {ep.ip}:80" in listing and binding.container_ip == ep.ip
    assert mgr.check() == []

    mgr.disconnect(ep.id)
    assert tap not in sh("ip", "-o", "link").stdout
    assert all(e != ep.id for _, e in mgr.store.leases(net.id))
    assert mgr.ports() == [] and f"{ep.ip}:80" not in sh(
        "nft", "list", "table", "inet", env.table).stdout
    with pytest.raises(InvalidArgument, match="host network"):
        mgr.connect_tap("ep-host", "host")
    assert mgr.check() == []
