"""Pure parts: address management, names, values, container files."""

from __future__ import annotations

import ipaddress

import pytest

import isobox.network
from isobox.errors import Conflict, InvalidArgument, Unavailable
from isobox.network import ResolvConf, hosts_for, resolv_conf_for
from isobox.network.host import parse_resolv_conf
from isobox.network.ipam import DEFAULT_POOLS, Pool, allocate, choose_subnet, parse_subnet
from isobox.network.model import Network, PortBinding, check_mac, docker_mac, rfc3339
from isobox.network.naming import Names

N = ipaddress.IPv4Network


def test_public_surface() -> None:
    for name in isobox.network.__all__:
        assert hasattr(isobox.network, name), name


def test_parse_subnet_defaults_and_errors() -> None:
    s = parse_subnet("10.1.2.3/24")
    assert (s.cidr, str(s.gateway), str(s.ip_range)) == ("10.1.2.0/24", "10.1.2.1", "10.1.2.0/24")
    assert s.reserved() == {int(ipaddress.IPv4Address(a))
                            for a in ("10.1.2.0", "10.1.2.255", "10.1.2.1")}
    for args in (("10.0.0.0/31",), ("10.0.0.0/24", "10.0.0.0"), ("10.0.0.0/24", "10.0.0.255"),
                 ("10.0.0.0/24", "", "10.0.1.0/28"), ("fd00::/64",), ("10.0.0.0/24", "bad")):
        with pytest.raises(InvalidArgument):
            parse_subnet(*args)


def test_allocate() -> None:
    s = parse_subnet("10.0.0.0/29", "10.0.0.6", "10.0.0.4/30")
    assert allocate(s, []) == "10.0.0.4"
    assert allocate(s, ["10.0.0.4"]) == "10.0.0.5"
    with pytest.raises(Unavailable):
        allocate(s, ["10.0.0.4", "10.0.0.5"])  # .6 gateway, .7 broadcast
    assert allocate(s, [], "10.0.0.5") == "10.0.0.5"
    with pytest.raises(Conflict):
        allocate(s, ["10.0.0.5"], "10.0.0.5")
    with pytest.raises(InvalidArgument, match="outside"):
        allocate(s, [], "10.0.0.2")
    with pytest.raises(InvalidArgument, match="reserved"):
        allocate(s, [], "10.0.0.6")


def test_choose_subnet() -> None:
    assert choose_subnet(DEFAULT_POOLS, [N("0.0.0.0/0"), N("192.0.2.0/24")]) == N("172.17.0.0/16")
    taken = [N("172.16.0.0/12")]
    assert choose_subnet(DEFAULT_POOLS, taken) == N("192.168.0.0/20")
    assert choose_subnet([Pool("10.0.0.0/8", 16)], [N("10.0.5.0/24")],
                         [ipaddress.IPv4Address("10.0.0.53")]) == N("10.1.0.0/16")
    with pytest.raises(Unavailable):
        choose_subnet([Pool("10.0.0.0/23", 24)], [N("10.0.0.0/23")])
    with pytest.raises(InvalidArgument):
        list(Pool("10.0.0.0/24", 16).subnets())


def test_names() -> None:
    names = Names("ib1a2b")
    assert names.default_bridge == "ib1a2b0"
    bridge, veth = names.bridge("f" * 64), names.veth("endpoint")
    assert len(bridge) == len(veth) == 15
    assert names.is_our_bridge(bridge) and names.is_our_veth(veth)
    assert not names.is_our_veth("ib1a2b-0") and not names.is_our_bridge("eth0")
    assert Names().veth("x") != Names().veth("y")
    for bad in ("", "Upper", "toolongprefix", "1abc"):
        with pytest.raises(InvalidArgument):
            Names(bad)


def test_values() -> None:
    assert docker_mac("172.17.0.2") == "02:42:ac:11:00:02"
    assert check_mac("02:AB:cd:00:00:01") == "02:ab:cd:00:00:01"
    for bad in ("01:00:00:00:00:00", "02:00:00:00:00", "zz:00:00:00:00:00"):
        with pytest.raises(InvalidArgument):
            check_mac(bad)
    b = PortBinding("e", "127.0.0.1", 8080, "10.0.0.2", 80, "udp")
    assert str(b) == "127.0.0.1:8080->80/udp"
    assert rfc3339(0.5).endswith((":00", ":30")) and ".500000000" in rfc3339(0.5)
    net = Network(id="i", name="n", driver="bridge", created=0, subnet="10.0.0.0/24",
                  gateway="10.0.0.1", ip_range="10.0.0.128/25")
    shape = net.inspect()
    assert set(shape) >= {"Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM",
                          "Internal", "Containers", "Options", "Labels"}
    assert shape["IPAM"] == {"Driver": "default", "Options": {}, "Config": [
        {"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1", "IPRange": "10.0.0.128/25"}]}


def test_resolv_conf() -> None:
    host = parse_resolv_conf("# c\nnameserver 127.0.0.53\nnameserver 10.0.0.2 ; x\n"
                             "search a b\noptions ndots:2\n")
    assert host == ResolvConf(("127.0.0.53", "10.0.0.2"), ("a", "b"), ("ndots:2",))
    user = Network(id="i", name="n", driver="bridge", created=0, subnet="10.9.0.0/24",
                   gateway="10.9.0.1")
    default = Network(id="d", name="bridge", driver="bridge", created=0, predefined=True)
    hostnet = Network(id="h", name="host", driver="host", created=0, predefined=True)
    assert resolv_conf_for(user, host) == "nameserver 10.9.0.1\nsearch a b\noptions ndots:2\n"
    assert resolv_conf_for(default, host, dns_search=["x"], dns_options=["rotate"]) == \
        "nameserver 10.0.0.2\nsearch x\noptions rotate\n"
    assert resolv_conf_for(default, ResolvConf(("127.0.0.1",))) == \
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert resolv_conf_for(hostnet, host).startswith("nameserver 127.0.0.53\n")
    assert resolv_conf_for(default, host, dns=["1.1.1.1"]).startswith("nameserver 1.1.1.1\n")


def test_hosts() -> None:
    text = hosts_for("web", ["10.0.0.2"], domainname="corp",
                     extra_hosts=["db:10.0.0.9", "gw:host-gateway"], host_gateway="10.0.0.1")
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-3:] == ["10.0.0.9\tdb", "10.0.0.1\tgw", "10.0.0.2\tweb.corp web"]
    with pytest.raises(InvalidArgument):
        hosts_for("x", extra_hosts=["nocolon"])
    with pytest.raises(InvalidArgument):
        hosts_for("x", extra_hosts=["gw:host-gateway"])
