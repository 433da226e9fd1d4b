"""The application and its listeners: a unix socket (mode 0660, group
``isobox`` when it exists), TCP only behind TLS with client certificates
(plain TCP only when explicitly allowed), and sockets handed down by
systemd (``LISTEN_FDS``, ``fd://``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import signal
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from isobox.daemon import (
    routes_build,
    routes_containers,
    routes_exec,
    routes_images,
    routes_objects,
    routes_system,
)
from isobox.daemon.api import BACKEND, STATE, docker_headers, errors_middleware
from isobox.daemon.backend import Backend
from isobox.daemon.fastpath import Front, FrontSite
from isobox.engine.config import EngineConfig
from isobox.errors import InvalidArgument, Unavailable

log = logging.getLogger("isobox.daemon")

DEFAULT_HOST = "unix:///run/isobox/isobox.sock"
SOCKET_GROUP = "isobox"
SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class TLSOptions:
    verify: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass
class Listener:
    address: str
    sock: socket.socket
    ssl_context: ssl.SSLContext | None = None
    #: Socket files to remove at the end: (path, the inode bound there), so
    #: that a path another daemon has bound since is left alone.
    cleanup: list[tuple[str, int]] = field(default_factory=list)


def make_app(config: EngineConfig) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=8 << 20,
                          handler_args={"max_field_size": 65536})
    app[BACKEND] = Backend(config)
    app[STATE] = {}
    app.on_response_prepare.append(docker_headers)
    for module in (routes_system, routes_containers, routes_exec, routes_images,
                   routes_objects, routes_build):
        module.register(app)

    async def close(app: web.Application) -> None:
        app[BACKEND].close()

    app.on_cleanup.append(close)
    return app


# -- listeners -------------------------------------------------------------------------------

def _unix_listener(path: str, group: str | None) -> Listener:
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # left by a daemon that died
        else:
            raise Unavailable(f"another daemon is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    gid = -1
    if group:
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(group).gr_gid
    os.chown(path, -1, gid)
    os.chmod(path, 0o660)
    sock.listen(128)
    return Listener(f"unix://{path}", sock, cleanup=[(path, os.stat(path).st_ino)])


def _tls_context(tls: TLSOptions) -> ssl.SSLContext:
    if not (tls.cert and tls.key):
        raise InvalidArgument("TLS needs --tlscert and --tlskey")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    if tls.verify:
        if not tls.cacert:
            raise InvalidArgument("--tlsverify needs --tlscacert")
        context.load_verify_locations(tls.cacert)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _tcp_listener(address: str, tls: TLSOptions, insecure: bool) -> Listener:
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise InvalidArgument(f"invalid TCP address: tcp://{address}") from None
    context = None
    if tls.verify:
        context = _tls_context(tls)
    elif not insecure:
        raise InvalidArgument(
            f"refusing to listen on tcp://{address} without TLS client verification: "
            "give --tlsverify --tlscacert --tlscert --tlskey (or --insecure-tcp to serve "
            "anyone who can reach the port as root)")
    else:
        log.warning("serving tcp://%s WITHOUT TLS: anyone who can reach it controls this "
                    "host as root", address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return Listener(f"tcp://{host}:{sock.getsockname()[1]}", sock, context)


def inherited_sockets(env: dict[str, str] | None = None) -> list[socket.socket]:
    """Listening sockets passed by systemd (``LISTEN_PID``/``LISTEN_FDS``)."""
    env = dict(os.environ) if env is None else env
    if env.get("LISTEN_PID") not in (None, str(os.getpid())):
        return []
    try:
        count = int(env.get("LISTEN_FDS") or 0)
    except ValueError:
        return []
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        out.append(socket.socket(fileno=fd))
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return out


def listeners(hosts: list[str], *, tls: TLSOptions, insecure_tcp: bool,
              group: str | None = SOCKET_GROUP) -> list[Listener]:
    out: list[Listener] = []
    inherited = inherited_sockets()
    for host in hosts or ([] if inherited else [DEFAULT_HOST]):
        scheme, sep, rest = host.partition("://")
        if not sep:
            scheme, rest = ("unix", host) if host.startswith("/") else ("tcp", host)
        if scheme == "unix":
            out.append(_unix_listener(rest, group))
        elif scheme == "tcp":
            out.append(_tcp_listener(rest, tls, insecure_tcp))
        elif scheme == "fd":
            if not inherited:
                raise InvalidArgument("fd:// given but no socket was passed (LISTEN_FDS)")
        else:
            raise InvalidArgument(f"unsupported address {host}: want unix://, tcp:// or fd://")
    for sock in inherited:
        context = None
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            if tls.verify:
                context = _tls_context(tls)
            elif not insecure_tcp:
                raise InvalidArgument("an inherited TCP socket needs --tlsverify (or "
                                      "--insecure-tcp)")
        out.append(Listener(f"fd://{sock.fileno()}", sock, context))
    return out


def fast_path_enabled() -> bool:
    """The front for the hottest requests (``fastpath``), unless
    ``ISOBOXD_FAST_PATH=0`` (everything through aiohttp, as before)."""
    return os.environ.get("ISOBOXD_FAST_PATH", "1") != "0"


async def serve(config: EngineConfig, found: list[Listener]) -> None:
    app = make_app(config)
    app[STATE]["listening"] = ", ".join(x.address for x in found)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    fronts: set[Front] = set()
    for listener in found:
        site: web.SockSite
        if fast_path_enabled():
            site = FrontSite(runner, listener.sock, fronts, ssl_context=listener.ssl_context)
        else:
            site = web.SockSite(runner, listener.sock, ssl_context=listener.ssl_context)
        await site.start()
        log.info("API listening on %s", listener.address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if _early_stop:
        stop.set()
    _notify_ready()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: containers keep running")
        for front in list(fronts):
            front.close()
        await runner.cleanup()
        for listener in found:
            for path, inode in listener.cleanup:
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino == inode:
                        os.unlink(path)


def _notify_ready() -> None:
    """sd_notify READY=1 when systemd asked for it (Type=notify)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
        sock.sendall(b"READY=1")
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.debug("sd_notify: %s", exc)
    finally:
        sock.close()


def run(config: EngineConfig, found: list[Listener]) -> None:
    asyncio.run(serve(config, found))


_early_stop: list[int] = []


def catch_early_signals() -> None:
    """From now on a SIGTERM or SIGINT is remembered until ``serve`` takes
    over: a client can reach the socket as soon as it listens, before the
    event loop's handlers exist (the default action would end the daemon
    without removing its socket)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: _early_stop.append(signum))


__all__: list[Any] = ["DEFAULT_HOST", "Listener", "TLSOptions", "listeners", "make_app", "run"]
