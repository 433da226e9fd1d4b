"""The manager's side of the embedded DNS server: write its configuration
atomically, start it when needed (it daemonises once its sockets are bound,
so there is no start-up race), make it reload, stop it."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from isobox.errors import IsoboxError, Unavailable
from isobox.linux.files import atomic_write
from isobox.linux.lazylog import get_logger

log = get_logger(__name__)

# Files in the server's directory, shared with isobox.network.dnsserver.
LOCK, CONTROL, CONFIG = "server.lock", "control.sock", "config.json"


@dataclass(frozen=True)
class DnsZone:
    listen: str                              # the network's gateway address
    subnet: str
    records: Mapping[str, Sequence[str]]


class DnsService(Protocol):
    def apply(self, zones: Mapping[str, DnsZone], upstreams: Sequence[str]) -> None:
        """Serve exactly these zones (net id -> zone); stop when there are none."""
        ...

    def running(self) -> bool: ...

    def stop(self) -> None: ...


class DnsProcess:
    """``DnsService`` as the ``isobox.network.dnsserver`` process."""

    def __init__(self, directory: str, *, port: int = 53, python: str = sys.executable) -> None:
        self.dir = directory
        self.port = port
        self.python = python

    def _ask(self, cmd: str, timeout: float = 5.0) -> str | None:
        """The server's answer, or None when no server listens."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(os.path.join(self.dir, CONTROL))
            s.sendall(cmd.encode() + b"\n")
            return s.recv(4096).decode().strip()
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise IsoboxError(f"DNS server control: {exc}") from exc
        finally:
            s.close()

    def running(self) -> bool:
        return self._ask("ping") == "ok"

    def apply(self, zones: Mapping[str, DnsZone], upstreams: Sequence[str]) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        config = {"port": self.port, "upstreams": list(upstreams),
                  "networks": {k: {"listen": z.listen, "subnet": z.subnet,
                                   "records": {n: list(v) for n, v in z.records.items()}}
                               for k, z in zones.items()}}
        atomic_write(os.path.join(self.dir, CONFIG), json.dumps(config, indent=1).encode(),
                     0o600)
        if not zones:
            self.stop()
            return
        reply = self._ask("reload")
        if reply is None:
            self._start()
            reply = self._ask("reload")
        if reply is None:
            raise Unavailable(f"the DNS server did not start: see {self.dir}/server.log")
        if reply != "ok":
            log.warning("DNS server: %s", reply)

    def _start(self) -> None:
        from isobox.linux.run import run

        env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG")}
        proc = run([self.python, "-m", "isobox.network.dnsserver", "--dir", self.dir,
                    "--daemon"], env=env, check=False, timeout=30)
        if proc.returncode != 0:
            raise Unavailable("the DNS server failed to start: "
                              + proc.stderr.decode(errors="replace").strip())

    def stop(self, timeout: float = 5.0) -> None:
        if self._ask("stop") is None:
            return
        lock_path = os.path.join(self.dir, LOCK)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # gone once its lock is free
            fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.05)
            finally:
                os.close(fd)
        raise IsoboxError("the DNS server did not stop")

    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.dir, LOCK)) as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and self.running() else None
