"""The embedded DNS server: one process per host, listening on the gateway
address of every user-defined network (UDP and TCP), like Docker's
127.0.0.11 but outside the containers.

It answers A (and PTR) queries for the names of the network the query
arrived on, from clients of that network only, and forwards everything else
to the host's resolvers. Its configuration is a JSON file written by the
manager (``dnsctl``); a unix control socket says ``reload``, ``ping`` or
``stop``. A lock file held for the process's life makes it a singleton.

Run as ``python -m isobox.network.dnsserver --dir DIR [--daemon]``.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import selectors
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from isobox.network import dnswire
from isobox.network.dnsctl import CONFIG, CONTROL, LOCK

IP_FREEBIND = 15
TTL = 600
UPSTREAM_TIMEOUT = 2.0


@dataclass
class Zone:
    net_id: str
    listen: str
    subnet: ipaddress.IPv4Network
    records: dict[str, list[str]] = field(default_factory=dict)

    def reverse(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, ips in self.records.items():
            for ip in ips:
                out.setdefault(ip, name)
        return out


def load_config(path: str) -> tuple[list[Zone], list[tuple[str, int]], int]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return [], [], 53
    zones = [Zone(net_id, n["listen"], ipaddress.IPv4Network(n["subnet"]),
                  {k.lower(): list(v) for k, v in n.get("records", {}).items()})
             for net_id, n in data.get("networks", {}).items()]
    ups = []
    for u in data.get("upstreams", []):
        host, _, port = u.rpartition(":") if u.count(":") == 1 else (u, "", "53")
        ups.append((host, int(port or 53)))
    return zones, ups, int(data.get("port", 53))


class Server:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.sel = selectors.DefaultSelector()
        self.pool = ThreadPoolExecutor(max_workers=16)
        self.zones: dict[str, Zone] = {}
        self.upstreams: list[tuple[str, int]] = []
        self.port = 53
        self.listeners: dict[tuple[str, int], tuple[socket.socket, socket.socket]] = {}
        self.by_addr: dict[str, str] = {}       # listen address -> net id
        self.running = True
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(directory, CONTROL)
        if os.path.exists(path):
            os.unlink(path)
        self.control.bind(path)
        self.control.listen(8)
        self.sel.register(self.control, selectors.EVENT_READ, ("control", None))

    # -- configuration ---------------------------------------------------------

    def reload(self) -> list[str]:
        zones, self.upstreams, self.port = load_config(os.path.join(self.dir, CONFIG))
        errors = []
        wanted = {(z.listen, self.port) for z in zones}
        for key in list(self.listeners):
            if key not in wanted:
                for s in self.listeners.pop(key):
                    self.sel.unregister(s)
                    s.close()
        for z in zones:
            key = (z.listen, self.port)
            if key not in self.listeners:
                try:
                    self.listeners[key] = self._bind(*key)
                except OSError as exc:
                    errors.append(f"{z.listen}:{self.port}: {exc}")
        self.zones = {z.net_id: z for z in zones}
        self.by_addr = {z.listen: z.net_id for z in zones}
        return errors

    def _bind(self, addr: str, port: int) -> tuple[socket.socket, socket.socket]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for s in (udp, tcp):
                s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            raise
        self.sel.register(udp, selectors.EVENT_READ, ("udp", addr))
        self.sel.register(tcp, selectors.EVENT_READ, ("tcp", addr))
        return udp, tcp

    # -- answering -------------------------------------------------------------

    def answer(self, addr: str, client: str, query: bytes) -> bytes | None:
        """Our reply, or None when the query goes upstream."""
        zone = self.zones.get(self.by_addr.get(addr, ""))
        parsed = dnswire.parse_query(query)
        if parsed is None:
            return dnswire.error_reply(query, dnswire.FORMERR)
        if zone is None or ipaddress.IPv4Address(client) not in zone.subnet:
            return dnswire.error_reply(query, dnswire.REFUSED)
        name, qtype = parsed
        if name in zone.records:
            ips = zone.records[name] if qtype in (dnswire.A, dnswire.ANY) else []
            return dnswire.a_reply(query, ips, TTL)
        if qtype == dnswire.PTR:
            ip = dnswire.ptr_to_ip(name)
            target = zone.reverse().get(ip) if ip else None
            if target is not None:
                return dnswire.ptr_reply(query, target, TTL)
        return None

    def forward_udp(self, query: bytes) -> bytes:
        for host, port in self.upstreams:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(UPSTREAM_TIMEOUT)
                try:
                    s.connect((host, port))
                    s.send(query)
                    return s.recv(65535)
                except OSError:
                    continue
        return dnswire.error_reply(query, dnswire.SERVFAIL)

    def forward_tcp(self, query: bytes) -> bytes:
        for host, port in self.upstreams:
            try:
                with socket.create_connection((host, port), timeout=UPSTREAM_TIMEOUT) as s:
                    s.sendall(struct.pack("!H", len(query)) + query)
                    return _read_framed(s)
            except OSError:
                continue
        return dnswire.error_reply(query, dnswire.SERVFAIL)

    def on_udp(self, sock: socket.socket, addr: str) -> None:
        try:
            query, peer = sock.recvfrom(65535)
        except OSError:
            return
        reply = self.answer(addr, peer[0], query)
        if reply is not None:
            _sendto(sock, reply, peer)
        elif self.upstreams:
            self.pool.submit(lambda: _sendto(sock, self.forward_udp(query), peer))
        else:
            _sendto(sock, dnswire.error_reply(query, dnswire.SERVFAIL), peer)

    def on_tcp(self, conn: socket.socket, addr: str, peer: str) -> None:
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    query = _read_framed(conn)
                    reply = self.answer(addr, peer, query)
                    if reply is None:
                        reply = self.forward_tcp(query)
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, EOFError):
                return

    def on_control(self) -> None:
        conn, _ = self.control.accept()
        with conn:
            conn.settimeout(5)
            try:
                cmd = conn.recv(64).decode().strip()
            except OSError:
                return
            if cmd == "reload":
                errors = self.reload()
                reply = "ok" if not errors else "error " + "; ".join(errors)
            elif cmd == "stop":
                self.running = False
                reply = "ok"
            else:
                reply = "ok" if cmd == "ping" else f"error unknown command {cmd!r}"
            try:
                conn.sendall(reply.encode() + b"\n")
            except OSError:
                pass

    def serve(self) -> None:
        while self.running:
            for key, _ in self.sel.select(timeout=1.0):
                kind, addr = key.data
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if kind == "control":
                    self.on_control()
                elif kind == "udp":
                    self.on_udp(sock, addr)
                else:
                    try:
                        conn, peer = sock.accept()
                    except OSError:
                        continue
                    threading.Thread(target=self.on_tcp, args=(conn, addr, peer[0]),
                                     daemon=True).start()
        for pair in self.listeners.values():
            for s in pair:
                s.close()
        os.unlink(os.path.join(self.dir, CONTROL))
        self.control.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _sendto(sock: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
    try:
        sock.sendto(data, peer)
    except OSError:
        pass


def _read_framed(s: socket.socket) -> bytes:
    head = _read_exact(s, 2)
    return _read_exact(s, struct.unpack("!H", head)[0])


def _read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="isobox-dns")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--daemon", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.dir, exist_ok=True)
    lock = os.open(os.path.join(args.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # one is running already
    server = Server(args.dir)
    errors = server.reload()
    for err in errors:
        print(f"isobox-dns: cannot listen on {err}", file=sys.stderr)
    if args.daemon and os.fork() != 0:
        os._exit(0)  # the caller's wait ends; sockets and the lock live on in the child
    if args.daemon:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(os.path.join(args.dir, "server.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
    os.ftruncate(lock, 0)
    os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
