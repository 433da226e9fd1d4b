"""Networking: isobox against dockerd's bridge, in the same run, on the same image.

Three measurements, then the NetworkManager's own operations:

1. Endpoint set-up: from starting ``run -d --network X --ip A busybox httpd -f
   -p 80`` until a TCP connection from the host to A:80 is accepted (the
   container answers); a connection attempt every 2 ms, several in flight.
   Every round takes a new address, and the host gets a permanent neighbour
   entry for it on the network's bridge first (both engines derive the MAC
   from the address: 02:42 and its four bytes), so that no ARP
   retransmission timer (1 s) and no stale entry falls into the measurement.
   Also when ``run -d`` itself returned. The tools take turns, in an order
   that rotates every round; one warm-up round is not counted.
2. Container -> container on one network: a server and a client container
   (``busybox sleep``), and the same small Python server and client, the
   host's interpreter, run in each container's network namespace
   (``nsenter --net=/proc/PID/ns/net``): only each engine's plumbing differs
   (for both a veth pair per container on a Linux bridge). One TCP stream's
   throughput (MiB/s), and a new connection + a small exchange + close (ms).
3. Host -> published port on 127.0.0.1 (``-p 127.0.0.1::5201`` on the server
   container), the same client on the host: isobox's DNAT (nftables with
   route_localnet), Docker's docker-proxy (what Docker uses for loopback
   connections by default).
4. What the default network costs a container's start: isobox's ``run --rm
   busybox true`` with ``--network none`` and without ``--network`` (the
   default bridge), taking turns (isobox only: the private dockerd has no
   default bridge).

The private dockerd is ``benchmarks/run.py``'s (own data root, exec root and
socket, ``--bridge=none --iptables=false``, so the host's iptables is never
touched; published ports go through docker-proxy), with isobox's ``image
bootstrap busybox`` saved and loaded into it. Each tool gets a user-defined
bridge network (``network create --subnet``) on a 10.x.0.0/24 that no host
route touches. Everything made is removed at the end.

Usage (as root):
    .venv/bin/python benchmarks/network.py [--rounds 10] [--mb 256] [--conns 300]
                                           [--json] [--no-docker]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import secrets
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from api import Isoboxd
from run import Dockerd, Tool, docker_tool, isobox_tool, log, not_root, pct, remove_base, run

from isobox.network import NetlinkLinks, NetworkManager, Pool

PORT = 5201

SERVER = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(512)
print("ready", flush=True)
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

CLIENT = r"""
import json, socket, sys, time
host, port, mb, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def once():
    t = time.perf_counter()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"0\n")
        assert s.recv(16) == b"ok\n"
    return time.perf_counter() - t
for _ in range(20):
    once()
lat = [once() for _ in range(conns)]
want, buf, got = mb << 20, bytearray(1 << 20), 0
t = time.perf_counter()
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(f"{want}\n".encode())
    while got < want:
        n = s.recv_into(buf)
        if not n:
            break
        got += n
print(json.dumps({"lat": lat, "mibps": got / (1 << 20) / (time.perf_counter() - t)}))
"""


def start_cost(tool: Tool, rounds: int) -> dict[str, dict[str, float]]:
    """``run --rm busybox true`` on --network none and on the default bridge."""
    modes = {"none": ["--network", "none"], "default bridge": []}
    samples: dict[str, list[float]] = {k: [] for k in modes}
    for i in range(rounds + 1):
        names = list(modes)[i % 2:] + list(modes)[:i % 2]
        for name in names:
            start = time.perf_counter()
            run(tool.cmd("run", "--rm", *modes[name], "busybox", "true"), env=tool.env)
            if i:  # the first round warms up
                samples[name].append(time.perf_counter() - start)
    return {k: {"median": round(statistics.median(v) * 1000, 1),
                "p90": round(pct(v, 90) * 1000, 1)} for k, v in samples.items()}


@dataclass
class Engine:
    """One tool on its own network."""

    tool: Tool
    octet: int
    network: str = ""
    bridge: str = ""
    setup_answer: list[float] = field(default_factory=list)
    setup_return: list[float] = field(default_factory=list)
    c2c_lat: list[float] = field(default_factory=list)
    c2c_tput: list[float] = field(default_factory=list)
    pub_lat: list[float] = field(default_factory=list)
    pub_tput: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.tool.name

    def __call__(self, *args: str, timeout: float = 120) -> str:
        return run(self.tool.cmd(*args), env=self.tool.env, timeout=timeout).stdout.decode()

    def address(self, host: int) -> str:
        return f"10.{self.octet}.0.{host}"


def _free_octets(n: int) -> list[int]:
    taken = [t for t in NetlinkLinks().host_networks() if t.prefixlen > 0]
    free = [o for o in range(100, 251)
            if not any(ipaddress.IPv4Network(f"10.{o}.0.0/16").overlaps(t) for t in taken)]
    if len(free) < n:
        raise SystemExit("no free 10.x.0.0/16 left")
    return random.sample(free, n)


def _bridge_of(eng: Engine) -> str:
    """The Linux bridge holding the network's gateway address."""
    gateway = eng.address(1)
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if f" {gateway}/" in line:
            return line.split()[1]
    raise RuntimeError(f"{eng.name}: no bridge holds {gateway}")


def _mac(octet: int, host: int) -> str:
    """Both engines' MAC for 10.octet.0.host (Docker's GenerateMACFromIP)."""
    return f"02:42:0a:{octet:02x}:00:{host:02x}"


def _answered(ip: str, port: int, deadline: float) -> float | None:
    """perf_counter() when a connection to ip:port was first accepted: a new
    non-blocking attempt every 2 ms, each given 200 ms."""
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, float] = {}
    try:
        next_try = 0.0
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            if now >= next_try and len(pending) < 100:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((ip, port))
                sel.register(s, selectors.EVENT_WRITE)
                pending[s] = now
                next_try = now + 0.002
            for key, _ in sel.select(timeout=0.001):
                s = key.fileobj  # type: ignore[assignment]
                assert isinstance(s, socket.socket)
                sel.unregister(s)
                del pending[s]
                ok = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                s.close()
                if ok:
                    return time.perf_counter()
            for s, started in list(pending.items()):
                if time.perf_counter() - started > 0.2:
                    sel.unregister(s)
                    del pending[s]
                    s.close()
        return None
    finally:
        for s in pending:
            s.close()
        sel.close()


def setup_round(eng: Engine, index: int, record: bool) -> None:
    host = 10 + index
    ip, mac, name = eng.address(host), _mac(eng.octet, host), f"netbench-setup-{index}"
    subprocess.run(["ip", "neigh", "replace", ip, "lladdr", mac, "dev", eng.bridge, "nud",
                    "permanent"], check=True)
    try:
        argv = eng.tool.cmd("run", "-d", "--name", name, "--network", eng.network, "--ip", ip,
                            "busybox", "httpd", "-f", "-p", "80", "-h", "/")
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=eng.tool.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        answered = _answered(ip, 80, start + 60)
        _, err = proc.communicate(timeout=120)
        returned = time.perf_counter()
        if proc.returncode != 0 or answered is None:
            raise RuntimeError(f"{eng.name}: {name} did not answer: {err.decode().strip()}")
        if record:
            eng.setup_answer.append(answered - start)
            eng.setup_return.append(returned - start)
    finally:
        eng("rm", "-f", name)
        subprocess.run(["ip", "neigh", "del", ip, "dev", eng.bridge], capture_output=True)


def _pid(eng: Engine, name: str) -> int:
    return int(eng("inspect", "-f", "{{.State.Pid}}", name).strip())


def _in_netns(pid: int, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *argv]


def traffic_round(eng: Engine, mb: int, conns: int, server_ip: str, host_port: int,
                  client_pid: int) -> None:
    for where, argv in (("c2c", _in_netns(client_pid, sys.executable, "-c", CLIENT, server_ip,
                                          str(PORT), str(mb), str(conns))),
                        ("pub", [sys.executable, "-c", CLIENT, "127.0.0.1", str(host_port),
                                 str(mb), str(conns)])):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
        data = json.loads(out.stdout)
        getattr(eng, f"{where}_lat").extend(data["lat"])
        getattr(eng, f"{where}_tput").append(data["mibps"])


def start_pair(eng: Engine, procs: list[subprocess.Popen[str]]) -> tuple[str, int, int]:
    """The server (published on 127.0.0.1) and client containers; returns the
    server's address, its host port and the client's pid."""
    server_ip = eng.address(2)
    eng("run", "-d", "--name", "netbench-server", "--network", eng.network, "--ip", server_ip,
        "-p", f"127.0.0.1::{PORT}", "busybox", "sleep", "3600")
    eng("run", "-d", "--name", "netbench-client", "--network", eng.network, "--ip",
        eng.address(3), "busybox", "sleep", "3600")
    server = subprocess.Popen(_in_netns(_pid(eng, "netbench-server"), sys.executable, "-c",
                                        SERVER, str(PORT)),
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                              start_new_session=True)
    procs.append(server)
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{eng.name}: the server did not start")
    host_port = int(eng("port", "netbench-server", f"{PORT}/tcp").split()[0].rpartition(":")[2])
    return server_ip, host_port, _pid(eng, "netbench-client")


def manager_ops(rounds: int) -> dict[str, float]:
    """The NetworkManager's operations in process (median ms), in namespaces
    made here: where the time of an endpoint goes."""
    uid = secrets.token_hex(2)
    octet = _free_octets(1)[0]
    tmp = tempfile.mkdtemp(prefix="isobox-netbench-ops-")
    mgr = NetworkManager(os.path.join(tmp, "state"), table=f"ibb{uid}", bridge_prefix=f"ib{uid}",
                         pools=[Pool(f"10.{octet}.0.0/16", 24)], dns_upstreams=[])
    ops: dict[str, list[float]] = {k: [] for k in ("create_network", "connect", "publish",
                                                   "disconnect", "remove_network")}
    namespaces: list[str] = []

    def timed(fn: Callable[[], object]) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    try:
        mgr.create_network("keep", subnet=f"10.{octet}.200.0/24")  # DNS server stays up
        for i in range(rounds + 1):
            ns = f"ib{uid}-{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            namespaces.append(ns)
            net, ep = f"bench{i}", f"ep{i}"
            sample = {
                "create_network": timed(partial(mgr.create_network, net,
                                                subnet=f"10.{octet}.{i + 1}.0/24")),
                "connect": timed(partial(mgr.connect, ep, net, f"/run/netns/{ns}",
                                         aliases=(ep,))),
                "publish": timed(partial(mgr.publish, ep, "127.0.0.1", 0, 80)),
                "disconnect": timed(partial(mgr.disconnect, ep)),
                "remove_network": timed(partial(mgr.remove_network, net)),
            }
            if i:  # the first round warms up (imports, the DNS server's start)
                for k, v in sample.items():
                    ops[k].append(v)
    finally:
        mgr.destroy()
        mgr.close()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: round(statistics.median(v) * 1000, 1) for k, v in ops.items()}


def _ms(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values) * 1000, 2),
            "p90": round(pct(values, 90) * 1000, 2)}


def summary(engines: list[Engine], ops: dict[str, float], starts: dict[str, Any],
            notes: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": args.rounds, "mb": args.mb, "conns": args.conns,
                           "notes": notes, "manager_ops_ms": ops,
                           "isobox_run_rm_true_ms": starts, "tools": {}}
    for eng in engines:
        out["tools"][eng.name] = {
            "setup_answering_ms": _ms(eng.setup_answer),
            "setup_run_returned_ms": _ms(eng.setup_return),
            "c2c_MiB_s": round(statistics.median(eng.c2c_tput), 1),
            "c2c_connect_request_close_ms": _ms(eng.c2c_lat),
            "published_MiB_s": round(statistics.median(eng.pub_tput), 1),
            "published_connect_request_close_ms": _ms(eng.pub_lat),
        }
    return out


def render(result: dict[str, Any]) -> str:
    tools = result["tools"]
    docker = tools.get("docker")

    def ratio(name: str, key: str, sub: str | None = None) -> str:
        if docker is None or name == "docker":
            return ""
        mine, theirs = tools[name][key], docker[key]
        if sub:
            mine, theirs = mine[sub], theirs[sub]
        return f"  ({mine / theirs:.2f}x docker)" if theirs else ""

    lines = [f"endpoint set-up: run -d --network X until the container answers "
             f"({result['rounds']} rounds, ms)",
             f"  {'tool':8} {'answering median':>17} {'p90':>8} {'run -d returned':>16}"]
    for name, r in tools.items():
        lines.append(f"  {name:8} {r['setup_answering_ms']['median']:17.1f} "
                     f"{r['setup_answering_ms']['p90']:8.1f} "
                     f"{r['setup_run_returned_ms']['median']:16.1f}"
                     + ratio(name, "setup_answering_ms", "median"))
    for title, tput, lat in (("container -> container, one network", "c2c_MiB_s",
                              "c2c_connect_request_close_ms"),
                             ("host -> published port on 127.0.0.1 (isobox: DNAT, docker: "
                              "docker-proxy)", "published_MiB_s",
                              "published_connect_request_close_ms")):
        lines.append(f"{title}: one stream of {result['mb']} MiB, {result['conns']} "
                     "connections")
        lines.append(f"  {'tool':8} {'MiB/s':>8} {'connect+request+close ms median':>32} "
                     f"{'p90':>7}")
        for name, r in tools.items():
            lines.append(f"  {name:8} {r[tput]:8.1f} {r[lat]['median']:32.3f} "
                         f"{r[lat]['p90']:7.3f}" + ratio(name, tput))
    starts = result["isobox_run_rm_true_ms"]
    lines.append(f"isobox run --rm busybox true ({result['rounds'] * 2} rounds, ms): " + ", ".join(
        f"{k} median {v['median']} (p90 {v['p90']})" for k, v in starts.items()))
    lines.append("isobox's NetworkManager in process, median ms: " + ", ".join(
        f"{k} {v}" for k, v in result["manager_ops_ms"].items()))
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="set-up rounds per tool (10)")
    ap.add_argument("--mb", type=int, default=256, help="MiB per throughput stream (256)")
    ap.add_argument("--conns", type=int, default=300, help="connections timed per path (300)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-isoboxd", action="store_true",
                    help="skip isobox behind its Engine API (the docker CLI against isoboxd)")
    args = ap.parse_args()
    if not_root():
        return 2

    notes: list[str] = []
    # A short path: dockerd's unix sockets under it must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="isobox-net-bench-", dir="/tmp"))
    daemon: Dockerd | None = None
    engines: list[Engine] = []
    procs: list[subprocess.Popen[str]] = []
    octets = _free_octets(3)
    isoboxd: Isoboxd | None = None
    try:
        log("isobox: bootstrap busybox")
        (base / "isobox").mkdir()
        engines.append(Engine(isobox_tool(base), octets[0]))
        if not args.no_isoboxd:
            log("isoboxd: the same engine behind the Engine API, driven by the docker CLI")
            (base / "isoboxd").mkdir()
            isoboxd = Isoboxd(base / "isoboxd")
            isoboxd.start()
            engines.append(Engine(Tool("isoboxd", ["docker"], isoboxd.env,
                                       ["--network", "none"]), octets[2]))
        if not args.no_docker:
            log("docker: private dockerd, load the same image")
            archive = base / "busybox.tar"
            run(engines[0].tool.cmd("save", "-o", str(archive), "busybox"),
                env=engines[0].tool.env)
            (base / "docker").mkdir()
            docker, daemon = docker_tool(base / "docker", archive, notes)
            if docker is not None:
                engines.append(Engine(docker, octets[1]))
        for eng in engines:
            eng.network = f"netbench-{secrets.token_hex(3)}"
            eng("network", "create", "--subnet", f"10.{eng.octet}.0.0/24", eng.network)
            eng.bridge = _bridge_of(eng)
        log(f"endpoint set-up: {args.rounds} rounds (+1 warm-up)")
        for i in range(args.rounds + 1):
            order = engines[i % len(engines):] + engines[:i % len(engines)]
            for eng in order:
                setup_round(eng, i, record=i > 0)
        log("traffic: container -> container and host -> published port")
        pairs = {eng.name: start_pair(eng, procs) for eng in engines}
        for i in range(3):  # interleaved
            for eng in engines[i % len(engines):] + engines[:i % len(engines)]:
                traffic_round(eng, args.mb, args.conns // 3, *pairs[eng.name])
        log("isobox: run --rm, --network none and the default bridge")
        starts = start_cost(engines[0].tool, args.rounds * 2)
        log("isobox's NetworkManager, in process")
        ops = manager_ops(args.rounds)
        result = summary(engines, ops, starts, notes, args)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 9)
            p.wait()
        for eng in engines:
            with contextlib.suppress(Exception):
                eng.tool.remove_all()
            if eng.network:
                with contextlib.suppress(Exception):
                    eng("network", "rm", eng.network)
        if isoboxd is not None:
            isoboxd.stop()
        if daemon is not None:
            daemon.stop()
        remove_base(base)
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
