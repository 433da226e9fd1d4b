"""Docker's hijacked connections: ``attach`` and ``exec start`` answer
``101 Switching Protocols`` (``Upgrade: tcp``), or plain ``200`` for clients
that did not ask to upgrade, and the connection becomes a raw stream: the
container's output (Docker's multiplexed frames, or raw bytes with a tty)
one way, its stdin the other, a half-close meaning end of stdin."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiohttp import web

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
STDOUT, STDERR = 1, 2


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
