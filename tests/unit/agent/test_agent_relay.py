"""The relay and the connection on a real poll loop, with pipes standing in
for a process's stdio and a socketpair for the port."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from isobox.agent import connection, relay
from isobox.agent.connection import Connection
from isobox.agent.relay import Relay
from isobox.agent.streams import Stream
from isobox.linux.loop import Loop
from isobox.taskapi import frames

GREETING = frames.encode_json(frames.EVENT, {"event": "ready", "kernel": "test"})


class Rig:
    def __init__(self) -> None:
        self.loop = Loop()
        self.agent_end, self.host = socket.socketpair()
        self.received: list[tuple[int, int, bytes]] = []
        self.closed = False
        self.conn = Connection(self.loop, self.agent_end.fileno(), greeting=GREETING,
                               on_frame=lambda *f: self.received.append(f),
                               on_closed=self._closed, on_drained=lambda: self.relay.resume(),
                               reconnects=False)
        self.relay = Relay(self.loop, self.conn)
        self.decoder = frames.Decoder()
        self.frames: list[tuple[int, int, bytes]] = []
        self.conn.start()

    def _closed(self) -> None:
        self.closed = True

    def spin(self, seconds: float = 0.05) -> None:
        self.loop.call_later(seconds, self.loop.stop)
        self.loop.run()

    def read_host(self) -> list[tuple[int, int, bytes]]:
        self.host.setblocking(False)
        while True:
            try:
                data = self.host.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self.frames += self.decoder.feed(data)
        return self.frames

    def close(self) -> None:
        self.loop.close()
        self.agent_end.close()
        self.host.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def piped_stream(stream_id: int = 1):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    stream = Stream(stream_id, 999_999, outputs={out_r: frames.STDOUT, err_r: frames.STDERR},
                    stdin=in_w)
    return stream, out_w, err_w, in_r


def test_greeting_first_then_output_then_eof_then_exit(rig):
    stream, out_w, err_w, in_r = piped_stream()
    rig.relay.attach(stream)
    os.write(out_w, b"hello")
    os.write(err_w, b"oops")
    rig.spin()
    rig.relay.exited(stream, 3 << 8)  # exited, output not closed yet: no exit event
    rig.spin()
    assert not any(kind == frames.OUTPUT_EOF for kind, _, _ in rig.read_host())
    os.close(out_w)
    os.close(err_w)
    rig.spin()
    got = rig.read_host()
    assert got[0] == (frames.EVENT, 0, GREETING[frames.HEADER:])
    assert (frames.STDOUT, 1, b"hello") in got and (frames.STDERR, 1, b"oops") in got
    assert [k for k, _, _ in got[-2:]] == [frames.OUTPUT_EOF, frames.EVENT]
    assert json.loads(got[-1][2]) == {"event": "exit", "stream": 1, "exit_code": 3}
    assert rig.relay.streams.find(1) is None
    assert os.read(in_r, 10) == b""  # its stdin was closed when it exited
    os.close(in_r)


def test_stdin_is_written_then_closed(rig):
    stream, out_w, err_w, in_r = piped_stream()
    rig.relay.attach(stream)
    rig.relay.write_stdin(1, b"abc")
    rig.relay.write_stdin(2, b"not ours")  # no such stream: dropped
    rig.relay.close_stdin(1)
    rig.spin()
    assert os.read(in_r, 100) == b"abc"
    assert os.read(in_r, 100) == b""  # closed after the buffer was written
    rig.relay.write_stdin(1, b"late")  # after STDIN_EOF: dropped
    for fd in (out_w, err_w, in_r):
        os.close(fd)
    rig.relay.exited(stream, 0)
    rig.spin()
    assert json.loads(rig.read_host()[-1][2])["exit_code"] == 0


def test_output_held_open_ends_after_the_grace(rig, monkeypatch):
    monkeypatch.setattr(relay, "DRAIN_GRACE", 0.1)
    stream, out_w, err_w, in_r = piped_stream()
    rig.relay.attach(stream)
    os.write(out_w, b"last words")
    rig.relay.exited(stream, 9)  # killed; a background child still holds the pipes
    rig.spin(0.3)
    got = rig.read_host()
    assert (frames.STDOUT, 1, b"last words") in got
    assert [k for k, _, _ in got[-2:]] == [frames.OUTPUT_EOF, frames.EVENT]
    assert json.loads(got[-1][2])["exit_code"] == 137
    for fd in (out_w, err_w, in_r):
        os.close(fd)


def test_a_slow_host_pauses_the_output(rig):
    size = 6 << 20
    stream, out_w, err_w, in_r = piped_stream()
    rig.relay.attach(stream)

    def produce():
        view = memoryview(b"x" * size)
        while view:
            view = view[os.write(out_w, view[:1 << 16]):]
        os.close(out_w)

    writer = threading.Thread(target=produce)
    writer.start()
    deadline = time.monotonic() + 10
    while not rig.relay.paused and time.monotonic() < deadline:
        rig.spin(0.02)
    assert rig.relay.paused
    rig.spin(0.2)
    # Bounded: the queue stops growing once past the high-water mark.
    assert rig.conn.pending <= connection.HIGH_WATER + 2 * relay.READ_SIZE
    assert writer.is_alive()  # blocked on the full pipe
    os.close(err_w)
    received = 0
    deadline = time.monotonic() + 30
    while received < size and time.monotonic() < deadline:
        rig.spin(0.01)
        new = rig.read_host()
        received = sum(len(p) for k, _, p in new if k == frames.STDOUT)
    writer.join()
    assert received == size
    rig.relay.exited(stream, 0)
    rig.spin()
    assert [k for k, _, _ in rig.read_host()[-2:]] == [frames.OUTPUT_EOF, frames.EVENT]
    assert not rig.relay.paused
    os.close(in_r)


def test_requests_reach_the_handler_and_eof_closes(rig):
    rig.host.sendall(frames.encode_json(frames.REQUEST, {"id": 1, "op": "hello"})
                     + frames.encode(frames.STDIN, 4, b"x")[:5])
    rig.spin()
    assert rig.received == [(frames.REQUEST, 0, b'{"id":1,"op":"hello"}')]
    rig.host.sendall(frames.encode(frames.STDIN, 4, b"x")[5:])
    rig.spin()
    assert rig.received[-1] == (frames.STDIN, 4, b"x")
    rig.host.shutdown(socket.SHUT_WR)
    rig.spin()
    assert rig.closed
