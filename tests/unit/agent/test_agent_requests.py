"""Request validation: every field checked, nothing done with a bad one."""

from __future__ import annotations

import pytest

from isobox.agent import requests as rq
from isobox.errors import InvalidArgument


def test_request_id_is_the_integer_id_or_zero():
    assert rq.request_id({"id": 7}) == 7
    assert rq.request_id({"id": "7"}) == 0
    assert rq.request_id({"id": True}) == 0
    assert rq.request_id({}) == 0


def test_storage_parsed_bottom_to_top():
    req = rq.parse_storage({
        "layers": [{"serial": "l0", "fstype": "erofs"}, {"serial": "l1", "fstype": "ext4"}],
        "upper": {"serial": "up", "fstype": "ext4"},
        "shares": [{"tag": "vol0", "readonly": True}, {"tag": "vol1"}],
    })
    assert [(d.serial, d.fstype) for d in req.layers] == [("l0", "erofs"), ("l1", "ext4")]
    assert (req.upper.serial, req.upper.fstype) == ("up", "ext4")
    assert [(s.tag, s.readonly) for s in req.shares] == [("vol0", True), ("vol1", False)]


def test_storage_defaults_to_nothing():
    req = rq.parse_storage({"upper": None})
    assert req.layers == [] and req.upper is None and req.shares == []


@pytest.mark.parametrize("msg", [
    {"layers": [{"serial": "a", "fstype": "xfs"}]},
    {"layers": [{"fstype": "ext4"}]},
    {"layers": [{"serial": "", "fstype": "ext4"}]},
    {"layers": "l0"},
    {"upper": {"serial": "u", "fstype": "erofs"}},
    {"upper": "u"},
    {"shares": [{"tag": "../etc"}]},
    {"shares": [{"tag": ".."}]},
    {"shares": [{"tag": "a"}, {"tag": "a"}]},
    {"shares": [{"tag": "a", "readonly": "yes"}]},
])
def test_storage_refused(msg):
    with pytest.raises(InvalidArgument):
        rq.parse_storage(msg)


def test_network_parsed_and_mac_normalized():
    req = rq.parse_network({"interfaces": [{"mac": "02:42:0A:58:00:05", "name": "eth0",
                                            "address": "10.88.0.5/16", "gateway": "10.88.0.1",
                                            "mtu": 1450}], "hostname": "web"})
    iface = req.interfaces[0]
    assert (iface.mac, iface.name, iface.address, iface.gateway, iface.mtu) == (
        "02:42:0a:58:00:05", "eth0", "10.88.0.5/16", "10.88.0.1", 1450)
    assert req.hostname == "web"


def test_network_optional_fields():
    req = rq.parse_network({"interfaces": [{"mac": "02:00:00:00:00:01", "name": "eth0",
                                            "address": "fd00::5/64"}]})
    assert req.interfaces[0].gateway is None and req.interfaces[0].mtu is None
    assert req.hostname is None


@pytest.mark.parametrize("change", [
    {"mac": "02:00:00:00:00"}, {"mac": "zz:00:00:00:00:01"}, {"name": "a" * 16},
    {"name": "a/b"}, {"address": "10.88.0.5"}, {"address": "10.88.0.300/16"},
    {"gateway": "gw"}, {"mtu": 20}, {"mtu": "1500"},
])
def test_network_interface_refused(change):
    iface = {"mac": "02:00:00:00:00:01", "name": "eth0", "address": "10.88.0.5/16", **change}
    with pytest.raises(InvalidArgument):
        rq.parse_network({"interfaces": [iface]})


def test_network_refuses_duplicates_and_long_hostname():
    iface = {"mac": "02:00:00:00:00:01", "name": "eth0", "address": "10.88.0.5/16"}
    with pytest.raises(InvalidArgument, match="macs"):
        rq.parse_network({"interfaces": [iface, {**iface, "name": "eth1"}]})
    with pytest.raises(InvalidArgument, match="hostname"):
        rq.parse_network({"interfaces": [], "hostname": "h" * 65})


def test_create_parsed():
    req = rq.parse_create({"stream": 1, "container_id": "c1", "config": {"process": {}},
                           "tty": True, "console": {"height": 24, "width": 80}})
    assert (req.stream, req.id, req.tty, req.open_stdin, req.console) == (
        1, "c1", True, False, (24, 80))


@pytest.mark.parametrize("change", [
    {"stream": -1}, {"stream": 1 << 32}, {"stream": "1"}, {"container_id": None},
    {"container_id": 5}, {"config": {"root": {}}}, {"config": []}, {"tty": 1},
    {"console": {"height": 24}}, {"console": {"height": 70000, "width": 80}},
])
def test_create_refused(change):
    msg = {"stream": 1, "container_id": "c1", "config": {"process": {}}, **change}
    with pytest.raises(InvalidArgument):
        rq.parse_create(msg)


def test_exec_signal_resize():
    req = rq.parse_exec({"stream": 2, "process": {"args": ["sh"]}, "open_stdin": True})
    assert (req.stream, req.process, req.tty, req.open_stdin, req.console) == (
        2, {"args": ["sh"]}, False, True, None)
    req = rq.parse_exec({"stream": 2, "process": {}, "tty": True,
                         "console": {"height": 5, "width": 6}})
    assert req.tty and req.console == (5, 6)
    assert rq.parse_signal({"stream": 2, "signal": 15}) == (2, 15, False)
    assert rq.parse_signal({"stream": 2, "signal": 9, "all": True}) == (2, 9, True)
    assert rq.parse_resize({"stream": 2, "height": 40, "width": 120}) == (2, 40, 120)
    for bad in ({"stream": 2, "signal": 0}, {"stream": 2, "signal": 65}, {"stream": 2}):
        with pytest.raises(InvalidArgument):
            rq.parse_signal(bad)
    with pytest.raises(InvalidArgument):
        rq.parse_exec({"stream": 2})


def test_wake_parsed():
    req = rq.parse_wake({"time_ns": 1_795_863_011_000_000_000, "entropy": "ab" * 32})
    assert req.time_ns == 1_795_863_011_000_000_000 and req.entropy == b"\xab" * 32


@pytest.mark.parametrize("msg", [
    {"entropy": "ab" * 32}, {"time_ns": -1, "entropy": "ab" * 32},
    {"time_ns": 1, "entropy": "xyz"}, {"time_ns": 1, "entropy": "ab"},
    {"time_ns": 1, "entropy": "ab" * 600}, {"time_ns": "1", "entropy": "ab" * 32},
])
def test_wake_refused(msg):
    with pytest.raises(InvalidArgument):
        rq.parse_wake(msg)
