"""Containers on networks through the real binary: the default bridge, a user
network with the embedded DNS, published ports (``-p``, ``-P``) reached from
the host's loopback, ``none``, internal networks, a host port already taken,
a VM's taps (``attach_vm``, without booting a VM), and nothing left behind."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.system.cli_containers_support import Isobox, make_box, network_leftovers

pytestmark = [
    pytest.mark.skipif(shutil.which("busybox") is None,
                       reason="needs the host's busybox (busybox-static)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                       reason="needs root and nft"),
]

SERVE = "echo hi > /tmp/index.html; httpd -f -p 80 -h /tmp"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    """A root whose network state is destroyed at the end, checked gone
    (``make_box``)."""
    for item in make_box(tmp_path_factory, "net"):
        try:
            yield item
        finally:
            for name in ("mynet", "shut"):
                item("network", "rm", name, check=False)


def _leftovers(box: Isobox) -> list[str]:
    return network_leftovers(box.root)


def test_user_network_dns_and_cleanup(box: Isobox) -> None:
    from isobox.engine.networking import names_for_root

    box("network", "create", "mynet")
    assert "mynet" in box("network", "ls", "--format", "{{.Name}}").stdout.split()
    box("run", "-d", "--name", "web", "--network", "mynet", "busybox", "sh", "-c", SERVE)
    settings = box.inspect("web")["NetworkSettings"]
    assert settings["Networks"]["mynet"]["IPAddress"]
    assert "web" in settings["Networks"]["mynet"]["DNSNames"]
    got = box("run", "--rm", "--network", "mynet", "busybox", "wget", "-qO-",
              "http://web/").stdout
    assert got == "hi\n"
    inspect = json.loads(box("network", "inspect", "mynet").stdout)[0]
    assert len(inspect["Containers"]) == 1
    assert box("network", "rm", "mynet", check=False).returncode != 0  # in use
    box("rm", "-f", "web")
    assert box("network", "rm", "mynet").stdout == "mynet\n"
    assert _leftovers(box) == []
    _, prefix = names_for_root(str(box.root))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"{prefix}v" not in links and f"{prefix}-" not in links


def test_published_port_from_the_host(box: Isobox) -> None:
    box("run", "-d", "--name", "pub", "--network", "bridge", "-p", "127.0.0.1:0:80",
        "busybox", "sh", "-c", SERVE)
    line = box("port", "pub", "80").stdout.strip()
    host, _, port = line.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert f"127.0.0.1:{port}->80/tcp" in box("ps", "--format", "{{.Ports}}").stdout
    ports = box.inspect("pub")["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]}
    body = b""
    for _ in range(50):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                body = resp.read()
            break
        except OSError:
            time.sleep(0.1)
    assert body == b"hi\n"
    box("rm", "-f", "pub")
    assert _leftovers(box) == []


def test_port_taken_on_the_host_is_refused(box: Isobox) -> None:
    before = box.ids()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        box.fails("run", "-d", "--network", "bridge", "-p", f"127.0.0.1:{port}:80",
                  "busybox", "true", code=125, match="already allocated")
    assert box.ids() == before
    assert _leftovers(box) == []


def test_none_has_only_loopback(box: Isobox) -> None:
    out = box("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]


def test_container_mode_shares_the_target_namespace(box: Isobox) -> None:
    box("run", "-d", "--name", "owner", "busybox", "sleep", "60")
    try:
        theirs = box("exec", "owner", "ip", "-4", "-o", "addr").stdout
        ours = box("run", "--rm", "--network", "container:owner", "busybox", "ip", "-4", "-o",
                   "addr").stdout
        assert ours == theirs and "eth0" in ours
        ps = box("run", "--rm", "--pid", "container:owner", "busybox", "ps", "-o", "comm")
        assert "sleep" in ps.stdout
        box.fails("run", "--rm", "--network", "container:nosuch", "busybox", "true",
                  code=125, match="nosuch")
    finally:
        box("rm", "-f", "owner")
    assert _leftovers(box) == []


def test_restart_policy_restarts_keep_their_network(box: Isobox) -> None:
    box("network", "create", "again")
    try:
        box("run", "-d", "--name", "bouncer", "--network", "again", "--restart",
            "on-failure:2", "busybox", "sh", "-c",
            "ip -4 -o addr show eth0 | grep -q inet && echo has-net; exit 3")
        deadline = time.monotonic() + 60
        state = "{{.State.Status}} {{.RestartCount}}"
        while time.monotonic() < deadline and \
                box("inspect", "-f", state, "bouncer").stdout.strip() != "exited 2":
            time.sleep(0.2)
        assert box("logs", "bouncer").stdout == "has-net\n" * 3
        box("rm", "-f", "bouncer")
    finally:
        box("rm", "-f", "bouncer", check=False)
        box("network", "rm", "again")
    assert _leftovers(box) == []


def test_internal_network_has_no_default_route(box: Isobox) -> None:
    box("network", "create", "--internal", "shut")
    try:
        out = box("run", "--rm", "--network", "shut", "busybox", "ip", "route").stdout
        assert "default" not in out and "eth0" in out
        box.fails("run", "--rm", "--network", "shut", "-p", "80", "busybox", "true",
                  code=125, match="internal")
    finally:
        box("network", "rm", "shut")
    assert _leftovers(box) == []


def test_unknown_network_is_refused(box: Isobox) -> None:
    box.fails("run", "--rm", "--network", "nosuch", "busybox", "true", code=125,
              match="not found")


def _get(url: str, tries: int = 50) -> bytes:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: bytes = resp.read()
                return body
        except OSError:
            time.sleep(0.1)
    return b""


def test_default_network_is_the_bridge(box: Isobox) -> None:
    out = box("run", "--rm", "busybox", "sh", "-c",
              "ip -o -4 addr show eth0; ip route; cat /etc/hosts").stdout
    addr = out.split("inet ")[1].split()[0]
    assert "default via " in out and addr.split("/")[0] in out.split("ip6-allrouters")[1]
    box("run", "-d", "--name", "dflt", "busybox", "sh", "-c", SERVE)
    settings = box.inspect("dflt")["NetworkSettings"]
    assert list(settings["Networks"]) == ["bridge"]
    ip = settings["Networks"]["bridge"]["IPAddress"]
    assert settings["IPAddress"] == ip and ip.rsplit(".", 1)[0] == addr.rsplit(".", 1)[0]
    # Containers on the default bridge reach each other by address.
    got = box("run", "--rm", "busybox", "wget", "-qO-", f"http://{ip}/").stdout
    assert got == "hi\n"
    box("rm", "-f", "dflt")
    assert _leftovers(box) == []


def test_run_rm_many_leaves_nothing(box: Isobox) -> None:
    procs = [box.popen("run", "--rm", "busybox", "true", stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE) for _ in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert box.ids() == []
    assert _leftovers(box) == []


def test_publish_all_exposed_ports(box: Isobox) -> None:
    # The image exposes 80; --expose adds 81/udp; -p 127.0.0.1::82 stays as given.
    box("run", "--name", "exposer", "busybox", "true")
    box("commit", "-c", "EXPOSE 80", "exposer", "busybox-web")
    box("rm", "exposer")
    try:
        box("run", "-d", "--name", "all", "-P", "--expose", "81/udp", "-p", "127.0.0.1::82",
            "busybox-web", "sh", "-c", SERVE)
        lines = box("port", "all").stdout.splitlines()
        ports = dict(line.split(" -> ") for line in lines)
        assert sorted(ports) == ["80/tcp", "81/udp", "82/tcp"], lines
        assert ports["82/tcp"].startswith("127.0.0.1:")
        for key in ("80/tcp", "81/udp"):
            host, _, port = ports[key].rpartition(":")
            assert host == "0.0.0.0" and int(port) > 0
        ps = box("ps", "--format", "{{.Ports}}", "--filter", "name=all").stdout
        for key, address in ports.items():
            assert f"{address}->{key}" in ps
        web = ports["80/tcp"].rpartition(":")[2]
        assert _get(f"http://127.0.0.1:{web}/") == b"hi\n"
        assert box("port", "all", "80").stdout == f"0.0.0.0:{web}\n"
        box("rm", "-f", "all")
        # -P with nothing exposed publishes nothing.
        box("run", "-d", "--name", "bare", "-P", "busybox", "sleep", "60")
        assert box("port", "bare").stdout == ""
        box("rm", "-f", "bare")
    finally:
        box("rm", "-f", "all", "bare", check=False)
        box("rmi", "busybox-web", check=False)
    assert _leftovers(box) == []


def test_attach_vm_makes_taps_before_any_process(box: Isobox, tmp_path: Path) -> None:
    """``Networking.attach_vm`` as the engine calls it before a VM boots: a tap
    per NIC on the network's bridge, ports, files; ``detach`` undoes it. No
    VM boots here: the links, the store and the files tell."""
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.networking import Networking
    from isobox.errors import InvalidArgument

    box("network", "create", "-o", "com.docker.network.driver.mtu=1400", "vmnet")
    ipam = json.loads(box("network", "inspect", "vmnet").stdout)[0]["IPAM"]["Config"][0]
    subnet, gateway = ipam["Subnet"], ipam["Gateway"]
    nets = Networking(str(box.root))

    def record(name: str, **host: Any) -> tuple[ContainerRecord, Path]:
        request = {"Image": "busybox", "Hostname": name, "HostConfig": host}
        rec = ContainerRecord(name * 8, name, "busybox", "sha256:" + "0" * 64, 0.0,
                              json.dumps(request), "{}", "", "isobox-runtime", "vm")
        d = tmp_path / name
        d.mkdir()
        for f in ("resolv.conf", "hosts"):
            (d / f).write_text("")
        return rec, d

    try:
        rec, d = record("vmaaaaaa", NetworkMode="vmnet",
                        PortBindings={"80/tcp": [{"HostIp": "127.0.0.1"}]})
        nics = nets.attach_vm(rec, str(d))
        assert len(nics) == 1
        nic = nics[0]
        ip, _, prefix = nic["address"].partition("/")
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet)
        assert prefix == subnet.split("/")[1]
        assert (nic["gateway"], nic["mtu"]) == (gateway, 1400)
        assert nic["mac"] == "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        detail = subprocess.run(["ip", "-d", "link", "show", nic["tap"]], capture_output=True,
                                text=True, check=True).stdout
        bridge = nets.manager.get("vmnet").bridge
        assert "tun type tap" in detail and f"master {bridge}" in detail and "mtu 1400" in detail
        assert json.loads((d / "network.json").read_text())["vm"] is True
        assert (d / "resolv.conf").read_text().startswith(f"nameserver {gateway}\n")
        assert f"{ip}\tvmaaaaaa" in (d / "hosts").read_text()
        (binding,) = nets.bindings(str(d)) or []
        assert binding[0] == "80/tcp" and binding[1].startswith("127.0.0.1:")
        assert nets.settings(str(d))["Networks"]["vmnet"]["IPAddress"] == ip  # type: ignore
        assert _leftovers(box) != []  # an endpoint is live
        nets.detach(str(d))
        assert nics[0]["tap"] not in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                    text=True).stdout
        assert _leftovers(box) == []

        default, d2 = record("vmbbbbbb")
        (nic,) = nets.attach_vm(default, str(d2))
        assert nic["gateway"] and nic["mtu"] == 1500  # the default bridge
        nets.detach(str(d2))
        none, d3 = record("vmcccccc", NetworkMode="none")
        assert nets.attach_vm(none, str(d3)) == []
        host, d4 = record("vmdddddd", NetworkMode="host")
        with pytest.raises(InvalidArgument, match="host"):
            nets.attach_vm(host, str(d4))
        with pytest.raises(InvalidArgument, match="host"):
            nets.validate(host.request, isolation="vm")
        assert _leftovers(box) == []
    finally:
        nets.close()
        box("network", "rm", "vmnet", check=False)
