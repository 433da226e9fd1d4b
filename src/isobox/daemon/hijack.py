"""Docker's hijacked connections: ``attach`` and ``exec start`` answer
``101 Switching Protocols`` (``Upgrade: tcp``), or plain ``200`` for clients
that did not ask to upgrade, and the connection becomes a raw stream: the
container's output (Docker's multiplexed frames, or raw bytes with a tty)
one way, its stdin the other, a half-close meaning end of stdin."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from typing import Any

from aiohttp import web

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
STDOUT, STDERR = 1, 2


#: Docker's default detach sequence for a tty: ctrl-p ctrl-q.
DEFAULT_DETACH_KEYS = b"\x10\x11"
_CTRL = ["ctrl-@", *(f"ctrl-{c}" for c in "abcdefghijklmnopqrstuvwxyz"), "ctrl-[",
         "ctrl-\\", "ctrl-]", "ctrl-^", "ctrl-_"]


def parse_detach_keys(text: str) -> bytes:
    """Docker's key sequence (``term.ToBytes``): comma-separated single
    characters, ``ctrl-@``..``ctrl-_`` (``ctrl-a``..``ctrl-z``) or ``DEL``.
    Raises ValueError for anything else."""
    codes = bytearray()
    for key in text.split(","):
        if len(key.encode()) == 1:
            codes += key.encode()
        elif key in _CTRL:
            codes.append(_CTRL.index(key))
        elif key == "DEL":
            codes.append(127)
        else:
            raise ValueError(f"Unknown character: '{key}'")
    return bytes(codes)


class DetachKeys:
    """Watches a tty's input for the detach sequence. ``feed`` returns what
    to pass on and whether the sequence is complete; a partial match is held
    back until the next byte shows whether it continues (then it is passed
    on, as Docker's escape proxy does) or until ``flush``. Unlike Docker's
    proxy, which sees a sequence only when each key arrives in a read of
    its own, the sequence is found anywhere in the stream."""

    def __init__(self, keys: bytes) -> None:
        assert keys
        self.keys = keys
        self.matched = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        keys = self.keys
        if not self.matched and keys[0] not in data:
            return data, False
        out = bytearray()
        for byte in data:
            if byte != keys[self.matched] and self.matched:
                out += keys[:self.matched]  # not the sequence after all
                self.matched = 0
            if byte == keys[self.matched]:
                self.matched += 1
                if self.matched == len(keys):
                    self.matched = 0
                    return bytes(out), True
            else:
                out.append(byte)
        return bytes(out), False

    def flush(self) -> bytes:
        held, self.matched = self.keys[:self.matched], 0
        return held


def frame(stream: int, payload: bytes) -> bytes:
    """Docker's stdcopy frame: [stream, 0, 0, 0, size (u32 big-endian)] + payload."""
    return struct.pack(">BxxxI", stream, len(payload)) + payload


class _Upgraded(web.StreamResponse):
    """A response whose body is whatever follows the headers, unframed."""

    _length_check = False


class _Inbound(asyncio.Protocol):
    """Takes the connection over from aiohttp once it is upgraded: what the
    client sends lands in a StreamReader; its half-close is EOF there and
    keeps our side open for writing (aiohttp would close the connection)."""

    def __init__(self, reader: asyncio.StreamReader, lost: asyncio.Event) -> None:
        self.reader = reader
        self.lost = lost

    def data_received(self, data: bytes) -> None:
        self.reader.feed_data(data)

    def eof_received(self) -> bool:
        self.reader.feed_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.reader.feed_eof()
        self.lost.set()


class Hijacked:
    """The raw stream of one hijacked request."""

    def __init__(self, request: web.Request, response: web.StreamResponse,
                 reader: asyncio.StreamReader, lost: asyncio.Event) -> None:
        self.request = request
        self.response = response
        self.stdin = reader
        self.lost = lost

    @property
    def closed(self) -> bool:
        transport = self.request.transport
        return self.lost.is_set() or transport is None or transport.is_closing()

    async def write(self, data: bytes) -> None:
        transport = self.request.transport
        if not data or transport is None or transport.is_closing():
            return
        transport.write(data)
        # Back-pressure: wait while the kernel buffer is full.
        while (transport.get_write_buffer_size() > 1 << 20 and not self.closed):
            await asyncio.sleep(0.01)

    async def headers_read(self, limit: float = 1.0) -> None:
        """Wait until the client has read the response's headers. Clients
        such as docker-py read an upgraded stream from the raw socket and
        lose whatever their HTTP parser read past the headers: the first
        bytes of a stream ready at once (attach's ``logs=1``) must not reach
        them together with the headers. On a unix socket the send queue
        says when the peer has read (SIOCOUTQ); elsewhere, a short pause."""
        transport = self.request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or sock.family != socket.AF_UNIX:
            await asyncio.sleep(0.05)
            return
        deadline = asyncio.get_running_loop().time() + limit
        while asyncio.get_running_loop().time() < deadline and not self.closed:
            try:
                unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                        b"\0\0\0\0"))[0]
            except OSError:
                return
            if unread == 0:
                return
            await asyncio.sleep(0.001)

    def close(self) -> None:
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            transport.close()


async def hijack(request: web.Request, *, tty: bool) -> Hijacked:
    """Answer the upgrade and take the connection over."""
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
    content_type = RAW if tty else MULTIPLEXED
    if upgrade:
        response: web.StreamResponse = _Upgraded(status=101, headers={
            "Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        response = _Upgraded(status=200, headers={"Content-Type": content_type})
    response.force_close()
    await response.prepare(request)
    reader = asyncio.StreamReader()
    lost = asyncio.Event()
    protocol: Any = request.protocol
    transport = request.transport
    assert transport is not None
    tail = bytes(getattr(protocol, "_message_tail", b"") or b"")
    if tail:
        protocol._message_tail = b""
        reader.feed_data(tail)
    transport.set_protocol(_Inbound(reader, lost))
    if not upgrade:
        reader.feed_eof()
    return Hijacked(request, response, reader, lost)
