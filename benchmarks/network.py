"""Networking: the cost of each manager operation, and a published port on
127.0.0.1 reached through DNAT (what isobox does: nftables + route_localnet)
against a userland proxy (what Docker does by default: docker-proxy, one
process per port that copies bytes between two sockets).

Everything runs on loopback and in namespaces made here, under a random
prefix and table name, and is removed at the end. Needs root.

    .venv/bin/python benchmarks/network.py [--rounds 10] [--conns 300] [--mb 64] [--json]

The server in the "container" answers ``0\\n`` with ``ok\\n`` (latency: a new
connection, one small exchange, close) and ``N\\n`` with N bytes (throughput).
The proxy is a separate Python process: a thread pair per connection
copying with recv/sendall, docker-proxy's design.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial

from isobox.network import NetlinkLinks, NetworkManager, Pool

SERVER = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 80)); srv.listen(512)
blob = b"x" * (1 << 20)
def handle(c):
    with c:
        f = c.makefile("rb"); n = int(f.readline())
        if n == 0:
            c.sendall(b"ok\n"); return
        while n > 0:
            c.sendall(blob[:min(n, len(blob))]); n -= len(blob)
while True:
    c, _ = srv.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

PROXY = r"""
import socket, sys, threading
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", 0)); lst.listen(512)
print(lst.getsockname()[1], flush=True)
target = (sys.argv[1], 80)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
def serve(c):
    u = socket.create_connection(target)
    t = threading.Thread(target=pump, args=(u, c), daemon=True); t.start()
    pump(c, u); t.join(); c.close(); u.close()
while True:
    c, _ = lst.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _free_octet() -> int:
    import ipaddress
    import random

    taken = NetlinkLinks().host_networks()
    for _ in range(200):
        octet = random.randint(100, 250)
        block = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if not any(block.overlaps(t) for t in taken if t.prefixlen > 0):
            return octet
    raise SystemExit("no free 10.x.0.0/16")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def latency(port: int, conns: int) -> list[float]:
    out = []
    for _ in range(conns):
        t = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"0\n")
            assert s.recv(16) == b"ok\n"
        out.append(time.perf_counter() - t)
    return out


def throughput(port: int, mb: int) -> float:
    want = mb << 20
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{want}\n".encode())
        got = 0
        while got < want:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    return got / (1 << 20) / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=300)
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    uid = secrets.token_hex(2)
    octet = _free_octet()
    tmp = tempfile.mkdtemp(prefix="isobox-netbench-")
    mgr = NetworkManager(os.path.join(tmp, "state"), table=f"ibb{uid}", bridge_prefix=f"ib{uid}",
                         pools=[Pool(f"10.{octet}.0.0/16", 24)], dns_upstreams=[])
    namespaces: list[str] = []
    procs: list[subprocess.Popen[str]] = []
    ops: dict[str, list[float]] = {k: [] for k in ("create_network", "connect", "publish",
                                                   "disconnect", "remove_network")}
    results: dict[str, object] = {"ops_ms": {}}
    try:
        # A network that stays: the DNS server keeps running, as on a host in use.
        mgr.create_network("benchport", subnet=f"10.{octet}.200.0/24")
        for i in range(args.rounds + 1):
            ns = f"ib{uid}-{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            namespaces.append(ns)
            path = f"/run/netns/{ns}"
            net, ep = f"bench{i}", f"ep{i}"
            sample = {
                "create_network": timed(partial(mgr.create_network, net,
                                                subnet=f"10.{octet}.{i + 1}.0/24")),
                "connect": timed(partial(mgr.connect, ep, net, path, aliases=(ep,))),
                "publish": timed(partial(mgr.publish, ep, "127.0.0.1", 0, 80)),
                "disconnect": timed(partial(mgr.disconnect, ep)),
                "remove_network": timed(partial(mgr.remove_network, net)),
            }
            if i:  # the first round is a warm-up (imports, first DNS server start)
                for k, v in sample.items():
                    ops[k].append(v)
        results["ops_ms"] = {k: round(statistics.median(v) * 1000, 1) for k, v in ops.items()}

        ep_port = mgr.connect("ep-port", "benchport", f"/run/netns/{namespaces[0]}")
        procs.append(subprocess.Popen(["ip", "netns", "exec", namespaces[0], sys.executable, "-c",
                                       SERVER, ep_port.ip], start_new_session=True, text=True))
        dnat = mgr.publish(ep_port.id, "127.0.0.1", 0, 80).host_port
        proxy = subprocess.Popen([sys.executable, "-c", PROXY, ep_port.ip], stdout=subprocess.PIPE,
                                 start_new_session=True, text=True)
        procs.append(proxy)
        assert proxy.stdout is not None
        proxied = int(proxy.stdout.readline())
        deadline = time.monotonic() + 10
        while True:
            try:
                latency(dnat, 1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for port in (dnat, proxied):
            latency(port, 20)  # warm-up
        lat: dict[str, list[float]] = {"dnat": [], "proxy": []}
        tput: dict[str, list[float]] = {"dnat": [], "proxy": []}
        for _ in range(3):  # interleaved
            for name, port in (("dnat", dnat), ("proxy", proxied)):
                lat[name] += latency(port, args.conns // 3)
                tput[name].append(throughput(port, args.mb))
        results["localhost_port"] = {
            name: {"connect_request_close_ms_median": round(statistics.median(lat[name]) * 1000, 3),
                   "p90_ms": round(statistics.quantiles(lat[name], n=10)[-1] * 1000, 3),
                   "MiB_per_s_median": round(statistics.median(tput[name]), 1)}
            for name in lat}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        mgr.destroy()
        mgr.close()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print("manager operations, median ms:")
        for k, v in results["ops_ms"].items():  # type: ignore[attr-defined]
            print(f"  {k:16} {v:8.1f}")
        print("published port on 127.0.0.1:")
        for name, r in results.get("localhost_port", {}).items():  # type: ignore[attr-defined]
            print(f"  {name:6} connect+request+close median {r['connect_request_close_ms_median']}"
                  f" ms (p90 {r['p90_ms']}), throughput {r['MiB_per_s_median']} MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
