"""The engine's side of networks, the pure parts: which network a container
joins, what ``-p``/``-P`` publish, which modes a VM may have."""

from __future__ import annotations

import pytest

from isobox.engine.networking import Networking, check_vm, network_of, port_specs
from isobox.errors import InvalidArgument
from isobox.network import PortSpec


def req(**host: object) -> dict[str, object]:
    return {"Image": "busybox", "HostConfig": host}


def test_the_default_network_is_the_bridge() -> None:
    assert network_of(req()) == "bridge"
    assert network_of(req(NetworkMode="default")) == "bridge"
    assert network_of(req(NetworkMode="mynet")) == "mynet"
    for mode in ("none", "host", "container:web"):
        assert network_of(req(NetworkMode=mode)) is None


def test_publish_and_publish_all() -> None:
    bindings = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                "53/udp": [{"HostIp": "", "HostPort": ""}], "9000": None}
    assert port_specs(req(PortBindings=bindings), ["443/tcp"]) == [
        PortSpec(53, 0, "0.0.0.0", "udp"), PortSpec(80, 8080, "127.0.0.1", "tcp"),
        PortSpec(9000, 0, "0.0.0.0", "tcp")]
    # -P: every exposed port not bound already, on a free port of 0.0.0.0.
    every = port_specs(req(PortBindings=bindings, PublishAllPorts=True),
                       ["443/tcp", "80/tcp", "53/udp", "7000/UDP", "22"])
    assert every == [PortSpec(53, 0, "0.0.0.0", "udp"), PortSpec(80, 8080, "127.0.0.1", "tcp"),
                     PortSpec(9000, 0, "0.0.0.0", "tcp"), PortSpec(22, 0, "0.0.0.0", "tcp"),
                     PortSpec(443, 0, "0.0.0.0", "tcp"), PortSpec(7000, 0, "0.0.0.0", "udp")]
    assert port_specs(req(PublishAllPorts=True)) == []
    with pytest.raises(InvalidArgument):
        port_specs(req(PortBindings={"80/tcp": [{"HostPort": "x"}]}))
    with pytest.raises(InvalidArgument):
        port_specs(req(PublishAllPorts=True), ["http/tcp"])


def test_vm_network_modes() -> None:
    check_vm(req())
    check_vm(req(NetworkMode="none"))
    check_vm(req(NetworkMode="mynet"))
    with pytest.raises(InvalidArgument, match="host"):
        check_vm(req(NetworkMode="host"))
    with pytest.raises(InvalidArgument, match="namespace"):
        check_vm(req(NetworkMode="container:web"))


def test_validate_refuses_host_for_a_vm_before_anything(tmp_path: object) -> None:
    nets = Networking(str(tmp_path))
    try:
        with pytest.raises(InvalidArgument, match="isolation=vm"):
            nets.validate(req(NetworkMode="host", Isolation="hyperv"))
        with pytest.raises(InvalidArgument, match="isolation=vm"):
            nets.validate(req(NetworkMode="host"), isolation="vm")
        nets.validate(req(NetworkMode="host"))  # a process container may
        assert nets._manager is None  # none of it needed the network state
    finally:
        nets.close()
