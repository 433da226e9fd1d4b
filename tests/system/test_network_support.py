"""Helpers for the network system tests (no tests here).

Everything a test makes carries a random suffix: network namespaces
``ibXXXX-N``, links under the prefix ``ibXXXX``, the nftables table
``ibtXXXX``, subnets from a /16 of 10.0.0.0/8 that no host route or
address touches. Traffic only ever goes to loopback or to namespaces the
test made. ``NetEnv.__exit__`` tears everything down and then asserts that
nothing carrying the suffix is left: links, routes, tables, namespaces.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from isobox.network import NetlinkLinks, NetworkManager, Pool, dnswire

PY = sys.executable


def _free_block() -> int:
    taken = NetlinkLinks().host_networks()
    for _ in range(200):
        octet = random.randint(100, 250)
        block = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if not any(block.overlaps(t) for t in taken if t.prefixlen > 0):
            return octet
    raise RuntimeError("no free 10.x.0.0/16 for the test")


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _ours(text: str, marks: tuple[str, ...]) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in marks)]


class FakeUpstream:
    """A DNS server on 127.0.0.1 (UDP) that knows one name: the only
    upstream our forwarding tests ever reach."""

    def __init__(self, name: str, ip: str) -> None:
        self.name, self.ip = name, ip
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            parsed = dnswire.parse_query(data)
            if parsed is None:
                continue
            self.queries.append(parsed[0])
            if parsed[0] == self.name:
                reply = dnswire.a_reply(data, [self.ip], 60)
            else:
                reply = dnswire.error_reply(data, dnswire.NXDOMAIN)
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.sock.close()


class NetEnv:
    def __init__(self, tmp: Path) -> None:
        self.uid = secrets.token_hex(2)
        self.prefix = f"ib{self.uid}"
        self.table = f"ibt{self.uid}"
        self.octet = _free_block()
        self.tmp = tmp
        self.upstream = FakeUpstream("outside.test", "198.51.100.7")
        self.managers: list[NetworkManager] = []
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()

    @property
    def marks(self) -> tuple[str, ...]:
        return (self.prefix, self.table, f"10.{self.octet}.")

    def subnet(self, n: int) -> str:
        return f"10.{self.octet}.{n}.0/24"

    def manager(self, **kw: Any) -> NetworkManager:
        opts: dict[str, Any] = dict(table=self.table, bridge_prefix=self.prefix,
                                    pools=[Pool(f"10.{self.octet}.0.0/17", 24)],
                                    dns_upstreams=[f"127.0.0.1:{self.upstream.port}"])
        opts.update(kw)
        mgr = NetworkManager(str(self.tmp / "netstate"), **opts)
        self.managers.append(mgr)
        return mgr

    def netns(self) -> str:
        name = f"{self.prefix}-{len(self.namespaces)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return f"/run/netns/{name}"

    @staticmethod
    def ns_name(path: str) -> str:
        return os.path.basename(path)

    def run_in(self, ns: str, *argv: str, check: bool = True, timeout: float = 30
               ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns_name(ns), *argv, check=check, timeout=timeout)

    def spawn_in(self, ns: str, *argv: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns_name(ns), *argv],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def http_server(self, ns: str | None, ip: str, port: int = 8000) -> None:
        """``python -m http.server`` on ip:port (in ns, or on the host), serving
        a file ``hello`` that says which server it is."""
        root = self.tmp / f"www-{ip}-{port}"
        root.mkdir(exist_ok=True)
        (root / "hello").write_text(f"hello from {ip}\n")
        argv = [PY, "-m", "http.server", "--bind", ip, "--directory", str(root), str(port)]
        if ns is None:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            self.procs.append(proc)
        else:
            self.spawn_in(ns, *argv)
        deadline = time.monotonic() + 10
        check = ["ss", "-Hltn", f"sport = :{port}"]
        while time.monotonic() < deadline:
            out = (self.run_in(ns, *check) if ns else sh(*check)).stdout
            if ip in out:
                return
            time.sleep(0.05)
        raise AssertionError(f"http server on {ip}:{port} did not come up")

    def fetch(self, ns: str | None, url: str, timeout: float = 3) -> str | None:
        """The body at url, fetched from inside ns (or the host); None on failure."""
        code = ("import sys, urllib.request\n"
                "try:\n"
                f"    print(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode(),"
                " end='')\n"
                "except Exception as e:\n"
                "    print(type(e).__name__, e, file=sys.stderr); sys.exit(1)\n")
        argv = [PY, "-c", code]
        proc = (self.run_in(ns, *argv, check=False, timeout=timeout + 20) if ns
                else sh(*argv, check=False, timeout=timeout + 20))
        return proc.stdout if proc.returncode == 0 else None

    def dns(self, ns: str, server: str, name: str, *, qtype: int = dnswire.A,
            tcp: bool = False) -> tuple[int, list[str]]:
        """Query server:53 from inside ns: (rcode, answers)."""
        code = f"""
import socket, struct, sys
from isobox.network import dnswire
q = dnswire.query({name!r}, {qtype})
if {tcp!r}:
    s = socket.create_connection(({server!r}, 53), timeout=3)
    s.sendall(struct.pack('!H', len(q)) + q)
    n = struct.unpack('!H', s.recv(2))[0]
    data = b''
    while len(data) < n:
        data += s.recv(n - len(data))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, ({server!r}, 53))
    data = s.recv(4096)
rcode, ans = dnswire.answers(data)
print(rcode, *ans)
"""
        proc = self.run_in(ns, PY, "-c", code, check=False)
        assert proc.returncode == 0, f"DNS query {name} to {server}: {proc.stderr}"
        out = proc.stdout.split()
        return int(out[0]), out[1:]

    def __enter__(self) -> NetEnv:
        self.before = self.snapshot()
        return self

    def snapshot(self) -> dict[str, list[str]]:
        return {"links": _ours(sh("ip", "-o", "link").stdout, self.marks),
                "routes": _ours(sh("ip", "route").stdout, self.marks),
                "tables": _ours(sh("nft", "list", "tables").stdout, self.marks),
                "netns": _ours(sh("ip", "netns", "list").stdout, self.marks)}

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=10)
        for mgr in self.managers:
            try:
                mgr.destroy()
            finally:
                mgr.close()
        for name in self.links:
            sh("ip", "link", "del", name, check=False)
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)
        sh("nft", "delete", "table", "inet", self.table, check=False)
        self.upstream.close()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.cleanup()
        finally:
            after = self.snapshot()
        assert after == {k: [] for k in after}, f"left on the host: {after}"
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == self.forward_before
