"""Host facts and knobs: sysctls, the host's resolvers, and whether a host
port is free (checked by binding it, as Docker does)."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Protocol

from isobox.errors import Conflict, InvalidArgument, IsoboxError


class Sysctl(Protocol):
    def read(self, key: str) -> str: ...
    def write(self, key: str, value: str) -> None: ...


class ProcSysctl:
    """``Sysctl`` on /proc/sys (keys in dotted form: net.ipv4.ip_forward)."""

    def __init__(self, root: str = "/proc/sys") -> None:
        self.root = root

    def _path(self, key: str) -> str:
        if ".." in key.split(".") or "/" in key:
            raise InvalidArgument(f"invalid sysctl key {key!r}")
        return os.path.join(self.root, *key.split("."))

    def read(self, key: str) -> str:
        with open(self._path(key)) as f:
            return f.read().strip()

    def write(self, key: str, value: str) -> None:
        with open(self._path(key), "w") as f:
            f.write(value)


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> ResolvConf:
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options.extend(words[1:])
    return ResolvConf(tuple(servers), tuple(search), tuple(options))


def read_resolv_conf(path: str = "/etc/resolv.conf") -> ResolvConf:
    try:
        with open(path) as f:
            return parse_resolv_conf(f.read())
    except OSError:
        return ResolvConf()


def nameserver_addrs(conf: ResolvConf) -> list[ipaddress.IPv4Address]:
    out = []
    for s in conf.nameservers:
        try:
            addr = ipaddress.ip_address(s)
        except ValueError:
            continue
        if isinstance(addr, ipaddress.IPv4Address):
            out.append(addr)
    return out


_SOCK_TYPES = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
               "sctp": (socket.SOCK_STREAM, 132)}


def bind_check(host_ip: str, port: int, proto: str) -> int:
    """Bind ``host_ip:port`` and let go. Returns the port (the kernel's choice
    when port is 0); Conflict when something on the host holds it."""
    kind, number = _SOCK_TYPES[proto]
    try:
        sock = socket.socket(socket.AF_INET, kind, number)
    except OSError as exc:
        raise IsoboxError(f"cannot check {proto} port {port}: {exc}") from exc
    try:
        # Not SO_REUSEADDR for UDP (it would let us share a bound port);
        # for TCP it only lets TIME_WAIT leftovers pass, never a listener.
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host_ip, port))
        return int(sock.getsockname()[1])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Conflict(f"Bind for {host_ip}:{port} failed: port is already allocated "
                           f"(something on the host listens on {proto} port {port})") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidArgument(f"cannot publish on {host_ip}: not an address of this "
                                  "host") from None
        raise IsoboxError(f"cannot bind {host_ip}:{port}/{proto}: {exc}") from exc
    finally:
        sock.close()
