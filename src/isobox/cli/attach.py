"""The terminal side of a container: attach, run in the foreground, start -a.

Output arrives from the monitor's socket (Docker's multiplexed frames unless
the container has a tty); our stdin goes to it; ctrl-p ctrl-q detaches (as
Docker's default detach keys); signals are forwarded unless --sig-proxy=false.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from isobox.cli.context import Context
from isobox.errors import IsoboxError

DETACH_KEYS = b"\x10\x11"  # ctrl-p ctrl-q


def parse_detach_keys(text: str | None) -> bytes:
    if not text:
        return DETACH_KEYS
    out = bytearray()
    for part in text.split(","):
        part = part.strip()
        if part.startswith("ctrl-") and len(part) == 6:
            ch = part[5]
            code = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}.get(ch)
            out.append(code if code is not None else (ord(ch.lower()) - ord("a") + 1))
        elif len(part) == 1:
            out.append(ord(part))
        else:
            from isobox.errors import InvalidArgument

            raise InvalidArgument(f"invalid detach keys {text!r}")
    return bytes(out)


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


class _Demux:
    """Splits Docker's stdcopy frames: [stream, 0, 0, 0, size (u32 BE)] + payload."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 8:
            stream, size = self.buf[0], struct.unpack(">I", self.buf[4:8])[0]
            if len(self.buf) < 8 + size:
                break
            out.append((stream, self.buf[8:8 + size]))
            self.buf = self.buf[8 + size:]
        return out


def stream(sock: Any, *, tty_mode: bool, stdin: bool, detach_keys: bytes,
           on_resize: Any = None) -> str:
    """Pump until the container's output ends ("exited") or the user detaches ("detached")."""
    demux = _Demux()
    inputs = [sock.fileno()] + ([0] if stdin else [])
    matched = b""
    previous = None
    if tty_mode and on_resize is not None and os.isatty(0):
        def resize(_s: int = 0, _f: object = None) -> None:
            # the container may be gone already (a short command): nothing to resize
            with contextlib.suppress(OSError, IsoboxError):
                rows, cols = struct.unpack("HHHH", __import__("fcntl").ioctl(
                    0, termios.TIOCGWINSZ, b"\0" * 8))[:2]
                on_resize(rows, cols)
        previous = signal.signal(signal.SIGWINCH, resize)
        resize()
    try:
        with raw_terminal(tty_mode and stdin):
            while True:
                try:
                    ready, _, _ = select.select(inputs, [], [])
                except InterruptedError:
                    continue
                if sock.fileno() in ready:
                    data = sock.recv(65536)
                    if not data:
                        return "exited"
                    if tty_mode:
                        os.write(1, data)
                    else:
                        for kind, payload in demux.feed(data):
                            os.write(2 if kind == 2 else 1, payload)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if not data:
                        inputs.remove(0)
                        with contextlib.suppress(OSError):
                            sock.shutdown(1)  # SHUT_WR: the container sees EOF on stdin
                        continue
                    if tty_mode:
                        for byte in data:
                            candidate = matched + bytes([byte])
                            if detach_keys.startswith(candidate):
                                matched = candidate
                                if matched == detach_keys:
                                    return "detached"
                                continue
                            if matched:
                                sock.sendall(matched)
                                matched = b""
                            sock.sendall(bytes([byte]))
                    else:
                        sock.sendall(data)
    finally:
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)


@contextlib.contextmanager
def proxy_signals(ctx: Context, container_id: str, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(Exception):
            ctx.containers.kill(container_id, str(signum))

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
            signal.SIGUSR2)
    saved = {s: signal.signal(s, forward) for s in sigs}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def attach_and_start(ctx: Context, container_id: str, *, stdin: bool, start: bool,
                     detach_keys: bytes = DETACH_KEYS, sig_proxy: bool = True) -> int | None:
    """Attach to the monitor (before starting, so no output is lost), start,
    pump; returns the exit code, or None when the user detached."""
    record = ctx.containers.get(container_id)
    tty_mode = bool(record.request.get("Tty"))
    if start and record.state["Status"] not in ("running", "paused", "restarting"):
        ctx.containers.ensure_monitor(record)
    client = ctx.containers.shim(record)
    sock = client.attach(stdin, True, True)
    if start:
        client.start()
        ctx.containers.event(ctx.containers.get(container_id), "start")
    with proxy_signals(ctx, container_id, sig_proxy and not tty_mode):
        how = stream(sock, tty_mode=tty_mode, stdin=stdin, detach_keys=detach_keys,
                     on_resize=lambda rows, cols: client.resize(rows, cols))
    sock.close()
    if how == "detached":
        sys.stderr.write("\r\nread escape sequence\r\n" if tty_mode else "")
        return None
    return int(ctx.containers.wait(container_id))


def start_attached(ctx: Context, name: str, *, stdin: bool) -> int:
    code = attach_and_start(ctx, name, stdin=stdin, start=True)
    return 0 if code is None else code
