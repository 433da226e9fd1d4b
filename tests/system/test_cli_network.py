"""Containers on networks through the real binary: a user network with the
embedded DNS, published ports reached from the host's loopback, ``none``,
internal networks, a host port already taken, and nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from tests.system.cli_containers_support import Isobox, make_box

pytestmark = [
    pytest.mark.skipif(shutil.which("busybox") is None,
                       reason="needs the host's busybox (busybox-static)"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                       reason="needs root and nft"),
]

SERVE = "echo hi > /tmp/index.html; httpd -f -p 80 -h /tmp"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    """A root whose network state is destroyed at the end, checked gone."""
    from isobox.engine.networking import names_for_root, open_manager

    for item in make_box(tmp_path_factory, "net"):
        root = str(item.root)
        try:
            yield item
        finally:
            for name in ("mynet", "shut"):
                item("network", "rm", name, check=False)
            nets = open_manager(root)
            try:
                nets.destroy()
            finally:
                nets.close()
            table, prefix = names_for_root(root)
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            assert f" {prefix}" not in links
            tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                    text=True).stdout
            assert table not in tables.split()


def _leftovers(box: Isobox) -> list[str]:
    from isobox.engine.networking import open_manager

    nets = open_manager(str(box.root))
    try:
        return nets.check()
    finally:
        nets.close()


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
