"""The guest's network as data: NICs by MAC on a fake sysfs, and busybox ip argv."""

from __future__ import annotations

import pytest

from isobox.agent import network
from isobox.agent.requests import parse_network
from isobox.errors import NotFound


def fake_net(root, nics):
    for name, mac in nics.items():
        d = root / "class" / "net" / name
        d.mkdir(parents=True)
        (d / "address").write_text(mac + "\n")
    return str(root)


def test_find_nic_by_mac(tmp_path):
    sys_root = fake_net(tmp_path, {"lo": "00:00:00:00:00:00", "enp0s3": "02:42:0a:58:00:05"})
    assert network.find_nic("02:42:0A:58:00:05", sys_root) == "enp0s3"
    assert network.find_nic("02:42:0a:58:00:06", sys_root) is None
    with pytest.raises(NotFound):
        network.wait_for_nic("02:42:0a:58:00:06", sys_root, timeout=0.05)


def iface(**change):
    return parse_network({"interfaces": [{"mac": "02:00:00:00:00:01", "name": "eth0",
                                          "address": "10.88.0.5/16", **change}]}).interfaces[0]


def test_ip_commands_rename_address_up_route():
    assert network.ip_commands(iface(gateway="10.88.0.1", mtu=1450), "enp0s3", "/bb") == [
        ["/bb", "ip", "link", "set", "dev", "enp0s3", "down"],
        ["/bb", "ip", "link", "set", "dev", "enp0s3", "name", "eth0"],
        ["/bb", "ip", "addr", "flush", "dev", "eth0"],
        ["/bb", "ip", "addr", "add", "10.88.0.5/16", "dev", "eth0"],
        ["/bb", "ip", "link", "set", "dev", "eth0", "mtu", "1450", "up"],
        ["/bb", "ip", "route", "replace", "default", "via", "10.88.0.1", "dev", "eth0"],
    ]


def test_ip_commands_for_a_nic_already_named_without_route():
    assert network.ip_commands(iface(), "eth0") == [
        ["/bin/busybox", "ip", "addr", "flush", "dev", "eth0"],
        ["/bin/busybox", "ip", "addr", "add", "10.88.0.5/16", "dev", "eth0"],
        ["/bin/busybox", "ip", "link", "set", "dev", "eth0", "up"],
    ]


def test_ipv6_default_route():
    commands = network.ip_commands(iface(address="fd00::5/64", gateway="fd00::1"), "eth0")
    assert commands[-1] == ["/bin/busybox", "ip", "-6", "route", "replace", "default", "via",
                            "fd00::1", "dev", "eth0"]


def test_a_template_nic_is_found_by_its_mac_and_given_the_containers():
    restored = iface(current_mac="02:1B:0B:00:00:01")
    assert restored.current_mac == "02:1b:0b:00:00:01" and restored.mac == "02:00:00:00:00:01"
    assert network.ip_commands(restored, "eth0", "/bb")[:2] == [
        ["/bb", "ip", "link", "set", "dev", "eth0", "down"],
        ["/bb", "ip", "link", "set", "dev", "eth0", "address", "02:00:00:00:00:01"],
    ]
    assert iface().current_mac == iface().mac  # a booted VM's NIC already has it
