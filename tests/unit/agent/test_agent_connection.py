"""A port whose host side comes and goes, played by a pty: with no slave
open, the master polls POLLHUP and reads fail, as a virtio-serial port does
while the host is not connected."""

from __future__ import annotations

import json
import os
import time
import tty

from isobox.agent.connection import Connection
from isobox.linux.loop import Loop
from isobox.taskapi import frames

GREETING = frames.encode_json(frames.EVENT, {"event": "ready", "kernel": "test"})


class Port:
    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.name = os.ttyname(slave)
        tty.setraw(slave)  # bytes pass as they are
        os.close(slave)
        self.host = -1

    def connect(self) -> None:
        self.host = os.open(self.name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def disconnect(self) -> None:
        os.close(self.host)
        self.host = -1

    def read_frames(self, loop: Loop, seconds: float = 0.2) -> list[tuple[int, int, bytes]]:
        decoder = frames.Decoder()
        got: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            loop.call_later(0.02, loop.stop)
            loop.run()
            try:
                got += decoder.feed(os.read(self.host, 1 << 16))
            except BlockingIOError:
                pass
        return got


def test_greets_on_every_connection_and_keeps_what_was_queued():
    port = Port()
    loop = Loop()
    received = []
    conn = Connection(loop, port.master, greeting=GREETING,
                      on_frame=lambda *f: received.append(f), on_closed=lambda: None,
                      on_drained=lambda: None, reconnects=True)
    conn.start()
    assert not conn.connected  # nobody on the host side yet
    conn.send_json(frames.EVENT, {"event": "early"})
    port.connect()
    got = port.read_frames(loop)
    assert conn.connected
    assert [json.loads(p)["event"] for _, _, p in got] == ["ready", "early"]

    os.write(port.host, frames.encode_json(frames.REQUEST, {"id": 1, "op": "hello"}))
    port.read_frames(loop, 0.1)
    assert received == [(frames.REQUEST, 0, b'{"id":1,"op":"hello"}')]

    port.disconnect()
    loop.call_later(0.1, loop.stop)
    loop.run()
    assert not conn.connected
    conn.send(frames.STDOUT, 3, b"while away")
    port.connect()
    got = port.read_frames(loop)
    assert got[0] == (frames.EVENT, 0, GREETING[frames.HEADER:])
    assert got[1:] == [(frames.STDOUT, 3, b"while away")]
    port.disconnect()
    loop.close()
    os.close(port.master)
