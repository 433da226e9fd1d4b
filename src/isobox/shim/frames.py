"""Docker's multiplexed stream format for attach without a tty.

Each frame is an 8-byte header, ``[stream, 0, 0, 0]`` then the payload
length as a big-endian uint32, followed by the payload. Streams: 0 stdin,
1 stdout, 2 stderr.
"""

from __future__ import annotations

STDIN, STDOUT, STDERR = 0, 1, 2
HEADER = 8
STREAM_IDS = {"stdout": STDOUT, "stderr": STDERR}


def encode(stream: int, payload: bytes) -> bytes:
    return bytes((stream, 0, 0, 0)) + len(payload).to_bytes(4, "big") + payload


class Demuxer:
    """Cuts a byte stream into (stream, payload) frames; feed it any chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames = []
        start = 0
        buf = self._buf
        while len(buf) - start >= HEADER:
            size = int.from_bytes(buf[start + 4:start + HEADER], "big")
            if buf[start] > STDERR or buf[start + 1:start + 4] != b"\0\0\0":
                raise ValueError(f"not a multiplexed stream (header {bytes(buf[start:start + 8])!r})")
            if len(buf) - start - HEADER < size:
                break
            frames.append((buf[start], bytes(buf[start + HEADER:start + HEADER + size])))
            start += HEADER + size
        del buf[:start]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
