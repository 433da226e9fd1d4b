"""Framing of the task API on a byte stream (a virtio-serial port, a unix
socket).

Each frame is a 9-byte header, ``kind`` (uint8), ``stream`` (uint32) and the
payload length (uint32), big-endian, then the payload.

Kinds
=====
``REQUEST``   host to guest, JSON ``{"id": int, "op": str, ...}``; stream 0
``RESPONSE``  guest to host, JSON ``{"id": int, "ok": bool, "error": str,
              "exit_code": int, ...}``: one per request, in any order
``EVENT``     guest to host, JSON ``{"event": "ready"|"exit", ...}``
``STDIN``     host to guest: input for process ``stream``
``STDOUT``    guest to host: output of process ``stream`` (the tty's output
              when it has one)
``STDERR``    guest to host
``STDIN_EOF`` host to guest: the input of process ``stream`` is closed
``OUTPUT_EOF`` guest to host: stdout and stderr of process ``stream`` are
              drained and closed; always sent before its ``exit`` event
"""

from __future__ import annotations

import json

REQUEST, RESPONSE, EVENT, STDIN, STDOUT, STDERR, STDIN_EOF, OUTPUT_EOF = range(1, 9)
HEADER = 9
MAX_PAYLOAD = 1 << 20  #: larger output is cut into several frames
KIND_NAMES = {REQUEST: "request", RESPONSE: "response", EVENT: "event", STDIN: "stdin",
              STDOUT: "stdout", STDERR: "stderr", STDIN_EOF: "stdin-eof",
              OUTPUT_EOF: "output-eof"}


class ProtocolError(Exception):
    """The peer sent something that is not a task API frame."""


def encode(kind: int, stream: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return (bytes((kind,)) + stream.to_bytes(4, "big") + len(payload).to_bytes(4, "big")
            + payload)


def encode_data(kind: int, stream: int, data: bytes) -> bytes:
    """Data of any size, cut into as many frames as it takes."""
    if len(data) <= MAX_PAYLOAD:
        return encode(kind, stream, data)
    return b"".join(encode(kind, stream, data[i:i + MAX_PAYLOAD])
                    for i in range(0, len(data), MAX_PAYLOAD))


def encode_json(kind: int, message: dict[str, object], stream: int = 0) -> bytes:
    return encode(kind, stream, json.dumps(message, separators=(",", ":")).encode())


def decode_json(payload: bytes) -> dict[str, object]:
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"a control frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a control frame is not a JSON object")
    return message


class Decoder:
    """Cuts a byte stream into ``(kind, stream, payload)``; feed it any chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self._buf += data
        frames = []
        start = 0
        buf = self._buf
        while len(buf) - start >= HEADER:
            kind = buf[start]
            if kind not in KIND_NAMES:
                raise ProtocolError(f"unknown frame kind {kind}")
            size = int.from_bytes(buf[start + 5:start + HEADER], "big")
            if size > MAX_PAYLOAD:
                raise ProtocolError(f"frame of {size} bytes exceeds {MAX_PAYLOAD}")
            if len(buf) - start - HEADER < size:
                break
            stream = int.from_bytes(buf[start + 1:start + 5], "big")
            frames.append((kind, stream, bytes(buf[start + HEADER:start + HEADER + size])))
            start += HEADER + size
        del buf[:start]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)
