"""The agent's end of the task API byte stream: frames in, frames out.

Output is queued and written as fast as the port takes it. Past
``HIGH_WATER`` queued bytes the connection is *throttled*: the relay stops
reading processes' output until the queue is back under ``LOW_WATER``, so a
slow host never makes the agent buffer without bound.

A virtio-serial port's host side can come and go. While it is away, poll
reports POLLHUP and reads return EOF, so the port is probed on a timer
instead of polled; each (re)connection starts with the greeting, and a
frame cut short by the disconnection is dropped (its tail would be garbage
to the next reader). An inherited socket (``--fd``) is connected once: its
EOF is the end of the session.
"""

from __future__ import annotations

import collections
import os
import select
import time

from isobox.agent.log import log
from isobox.linux.loop import ERR, IN, OUT
from isobox.taskapi import frames

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

    from isobox.linux.loop import Loop

HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
READ_SIZE = 1 << 16
PROBE_INTERVAL = 0.05  # seconds between looks at a disconnected port


class Connection:
    def __init__(self, loop: Loop, fd: int, *, greeting: bytes,
                 on_frame: Callable[[int, int, bytes], None], on_closed: Callable[[], None],
                 on_drained: Callable[[], None], reconnects: bool) -> None:
        self.loop = loop
        self.fd = fd
        self.greeting = greeting
        self.on_frame = on_frame
        self.on_closed = on_closed
        self.on_drained = on_drained
        self.reconnects = reconnects
        self.connected = False
        self.throttled = False
        self.pending = 0  # bytes queued, not yet written
        self._out: collections.deque[bytes] = collections.deque()
        self._offset = 0  # bytes of _out[0] already written
        self._decoder = frames.Decoder()
        os.set_blocking(fd, False)

    def start(self) -> None:
        if not self.reconnects or self._host_present():
            self._on_connected()
        else:
            self._probe_later()

    # -- sending --------------------------------------------------------

    def send(self, kind: int, stream: int, payload: bytes = b"") -> None:
        self._queue(frames.encode_data(kind, stream, payload))

    def send_json(self, kind: int, message: dict[str, object], stream: int = 0) -> None:
        self._queue(frames.encode_json(kind, message, stream))

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self.pending += len(data)
        if self.pending > HIGH_WATER:
            self.throttled = True
        if self.connected:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        while out:
            first = out[0]
            try:
                n = os.write(self.fd, memoryview(first)[self._offset:])
            except BlockingIOError:
                break
            except OSError as exc:
                log(f"writing to the host failed: {exc}")
                self._lost()
                return
            self._offset += n
            self.pending -= n
            if self._offset == len(first):
                out.popleft()
                self._offset = 0
        self.loop.modify(self.fd, IN | (OUT if out else 0))
        if self.throttled and self.pending <= LOW_WATER:
            self.throttled = False
            self.on_drained()

    def flush_blocking(self, timeout: float) -> None:
        """Write everything queued (the last words before power-off)."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while self._out and self.connected:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            poller.poll(int(left * 1000) + 1)
            self._flush()

    # -- receiving ------------------------------------------------------

    def _on_event(self, fd: int, events: int) -> None:
        if events & OUT:
            self._flush()
        if self.connected and events & (IN | ERR):
            self._read()

    def _read(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            log(f"reading from the host failed: {exc}")
            data = b""
        if not data:
            self._lost()
            return
        try:
            received = self._decoder.feed(data)
        except frames.ProtocolError as exc:
            log(f"dropping what the host sent: {exc}")
            self._decoder = frames.Decoder()
            return
        for kind, stream, payload in received:
            self.on_frame(kind, stream, payload)

    # -- the host coming and going --------------------------------------

    def _host_present(self) -> bool:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN | select.POLLOUT)
        return not any(events & select.POLLHUP for _, events in poller.poll(0))

    def _on_connected(self) -> None:
        self.connected = True
        self._out.appendleft(self.greeting)  # never mid-frame: see _lost
        self.pending += len(self.greeting)
        self.loop.add(self.fd, IN | OUT, self._on_event)
        self._flush()

    def _lost(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self.loop.remove(self.fd)
        self._decoder = frames.Decoder()
        if self._offset:
            cut = self._out.popleft()
            self.pending -= len(cut) - self._offset
            self._offset = 0
        if self.reconnects:
            log("the host disconnected; waiting for it")
            self._probe_later()
        else:
            self.loop.call_later(0, self.on_closed)  # not from inside a send

    def _probe_later(self) -> None:
        self.loop.call_later(PROBE_INTERVAL, self._probe)

    def _probe(self) -> None:
        if self._host_present():
            self._on_connected()
        else:
            self._probe_later()
