"""The embedded DNS server on loopback addresses, with a fake upstream
(also on loopback): answers, refusals, forwarding, reloads, the process."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from isobox.network import DnsProcess, DnsZone, dnswire
from isobox.network.dnsserver import Server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Upstream:
    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen()
        threading.Thread(target=self._udp, daemon=True).start()
        threading.Thread(target=self._tcp, daemon=True).start()

    @staticmethod
    def reply(q: bytes) -> bytes:
        parsed = dnswire.parse_query(q)
        if parsed and parsed[0] == "far.test":
            return dnswire.a_reply(q, ["198.51.100.1"], 5)
        return dnswire.error_reply(q, dnswire.NXDOMAIN)

    def _udp(self) -> None:
        while True:
            try:
                q, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            self.udp.sendto(self.reply(q), peer)

    def _tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                n = struct.unpack("!H", conn.recv(2))[0]
                r = self.reply(conn.recv(n))
                conn.sendall(struct.pack("!H", len(r)) + r)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def _config(path: Path, port: int, upstream: int | None, records: dict[str, list[str]]) -> None:
    path.write_text(json.dumps({
        "port": port, "upstreams": [f"127.0.0.1:{upstream}"] if upstream else [],
        "networks": {"mine": {"listen": "127.0.0.1", "subnet": "127.0.0.0/8",
                              "records": records},
                     "theirs": {"listen": "127.0.0.2", "subnet": "10.0.0.0/24",
                                "records": {"secret": ["10.0.0.5"]}}}}))


def ask(addr: str, port: int, name: str, qtype: int = dnswire.A, tcp: bool = False
        ) -> tuple[int, list[str]]:
    q = dnswire.query(name, qtype)
    if tcp:
        with socket.create_connection((addr, port), timeout=3) as s:
            s.sendall(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", s.recv(2))[0]
            data = b""
            while len(data) < n:
                data += s.recv(n - len(data))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(q, (addr, port))
            data = s.recv(4096)
    return dnswire.answers(data)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def test_server_answers_refuses_and_forwards(tmp_path: Path, upstream: Upstream) -> None:
    port = _free_port()
    _config(tmp_path / "config.json", port, upstream.port, {"web": ["127.0.0.9", "127.0.0.10"]})
    server = Server(str(tmp_path))
    assert server.reload() == []
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        assert ask("127.0.0.1", port, "WEB.") == (0, ["127.0.0.9", "127.0.0.10"])
        assert ask("127.0.0.1", port, "web", tcp=True) == (0, ["127.0.0.9", "127.0.0.10"])
        assert ask("127.0.0.1", port, "web", dnswire.AAAA) == (0, [])
        assert ask("127.0.0.1", port, "9.0.0.127.in-addr.arpa", dnswire.PTR) == (0, ["web."])
        assert ask("127.0.0.1", port, "far.test") == (0, ["198.51.100.1"])
        assert ask("127.0.0.1", port, "far.test", tcp=True) == (0, ["198.51.100.1"])
        assert ask("127.0.0.1", port, "nowhere.test")[0] == dnswire.NXDOMAIN
        # A client outside the network's subnet learns nothing of it.
        assert ask("127.0.0.2", port, "secret")[0] == dnswire.REFUSED
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"\x12\x34garbage", ("127.0.0.1", port))
            reply = s.recv(512)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0xF == dnswire.FORMERR
        _config(tmp_path / "config.json", port, None, {"api": ["127.0.0.11"]})
        server.reload()
        assert ask("127.0.0.1", port, "api") == (0, ["127.0.0.11"])
        assert ask("127.0.0.1", port, "far.test")[0] == dnswire.SERVFAIL  # no upstream
    finally:
        server.running = False
        thread.join(timeout=5)


def test_dns_process_lifecycle(tmp_path: Path, upstream: Upstream) -> None:
    port = _free_port()
    dns = DnsProcess(str(tmp_path / "dns"), port=port)
    assert not dns.running()
    zone = DnsZone("127.0.0.1", "127.0.0.0/8", {"svc": ["127.0.0.7"]})
    try:
        dns.apply({"n": zone}, [f"127.0.0.1:{upstream.port}"])
        assert dns.running() and dns.pid()
        assert ask("127.0.0.1", port, "svc") == (0, ["127.0.0.7"])
        dns.apply({"n": DnsZone("127.0.0.1", "127.0.0.0/8", {"svc2": ["127.0.0.8"]})}, [])
        assert ask("127.0.0.1", port, "svc2") == (0, ["127.0.0.8"])
        dns.apply({}, [])
        assert not dns.running() and dns.pid() is None
    finally:
        dns.stop()


def test_wire_helpers() -> None:
    assert dnswire.ptr_to_ip("4.3.2.1.in-addr.arpa") == "1.2.3.4"
    assert dnswire.ptr_to_ip("x.in-addr.arpa") is None
    assert dnswire.ptr_to_ip("example.com") is None
    assert dnswire.parse_query(dnswire.query("A.b.", dnswire.AAAA)) == ("a.b", dnswire.AAAA)
    assert dnswire.parse_query(b"\0") is None
    assert dnswire.error_reply(b"", dnswire.FORMERR)[:2] == b"\0\0"
