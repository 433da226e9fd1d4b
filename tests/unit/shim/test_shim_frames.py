"""Docker's multiplexed attach frames: encoding and the demuxer."""

from __future__ import annotations

import socket

import pytest

from isobox.shim.client import demux
from isobox.shim.frames import Demuxer, encode


def test_encode_header():
    assert encode(1, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    assert encode(2, b"") == b"\x02\x00\x00\x00\x00\x00\x00\x00"
    assert encode(1, b"x" * 70000)[4:8] == (70000).to_bytes(4, "big")


def test_demuxer_handles_any_split():
    stream = encode(1, b"out\n") + encode(2, b"err\n") + encode(1, b"") + encode(1, b"z" * 300)
    for step in (1, 3, 7, 8, 9, len(stream)):
        d = Demuxer()
        got = []
        for i in range(0, len(stream), step):
            got += d.feed(stream[i:i + step])
        assert got == [(1, b"out\n"), (2, b"err\n"), (1, b""), (1, b"z" * 300)], step
        assert d.pending == 0


def test_demuxer_holds_incomplete_frame():
    d = Demuxer()
    assert d.feed(encode(2, b"abcdef")[:10]) == []
    assert d.pending == 10
    assert d.feed(b"cdef") == [(2, b"abcdef")]


def test_demuxer_refuses_raw_stream():
    with pytest.raises(ValueError):
        Demuxer().feed(b"hello world, not frames")


def test_demux_reads_socket_until_eof():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(encode(1, b"one") + encode(2, b"two")[:5])
        a.sendall(encode(2, b"two")[5:])
        a.shutdown(socket.SHUT_WR)
        assert list(demux(b)) == [(1, b"one"), (2, b"two")]
