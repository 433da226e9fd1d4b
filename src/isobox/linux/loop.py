"""A small poll(2) loop: fd handlers, timers, and signals through a wakeup fd."""

from __future__ import annotations

import heapq
import os
import select
import signal
import time

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

IN = select.POLLIN
OUT = select.POLLOUT
ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL
MAX_ERRORS = 50  # failing callbacks in a row before the loop gives up


class Loop:
    def __init__(self) -> None:
        self._poll = select.poll()
        self._handlers: dict[int, Callable[[int, int], None]] = {}
        self._masks: dict[int, int] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._seq = 0
        self._signal_fds: tuple[int, int] | None = None
        self._errors = 0
        self.running = False

    # fds
    def add(self, fd: int, mask: int, handler: Callable[[int, int], None]) -> None:
        self._handlers[fd] = handler
        self._masks[fd] = mask
        self._poll.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        if fd in self._masks and self._masks[fd] != mask:
            self._masks[fd] = mask
            self._poll.modify(fd, mask)

    def mask(self, fd: int) -> int:
        return self._masks.get(fd, 0)

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            del self._masks[fd]
            self._poll.unregister(fd)

    # timers
    def call_later(self, delay: float, fn: Callable[[], None]) -> int:
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + max(0.0, delay), self._seq, fn))
        return self._seq

    def cancel(self, timer: int | None) -> None:
        if timer is not None:
            self._cancelled.add(timer)

    # signals
    def handle_signals(self, signals: tuple[int, ...], handler: Callable[[int], None]) -> None:
        """Deliver the signals to handler from the loop, never from inside a syscall."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signal_fds = (r, w)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in signals:
            signal.signal(sig, _noop)

        def on_wakeup(fd: int, _events: int) -> None:
            try:
                data = os.read(fd, 256)
            except BlockingIOError:
                return
            for sig in dict.fromkeys(data):  # each signal once, in order
                handler(sig)

        self.add(r, IN, on_wakeup)

    def close(self) -> None:
        if self._signal_fds is not None:
            signal.set_wakeup_fd(-1)
            self.remove(self._signal_fds[0])
            for fd in self._signal_fds:
                os.close(fd)
            self._signal_fds = None

    def run(self) -> None:
        self.running = True
        while self.running:
            timeout = -1
            if self._timers:
                timeout = max(0, int((self._timers[0][0] - time.monotonic()) * 1000) + 1)
            for fd, events in self._poll.poll(timeout):
                handler = self._handlers.get(fd)
                if handler is not None:
                    self._call(handler, fd, events)
                if not self.running:
                    return
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now and self.running:
                _, seq, fn = heapq.heappop(self._timers)
                if seq in self._cancelled:
                    self._cancelled.discard(seq)
                    continue
                self._call(fn)

    def _call(self, fn: Callable[..., None], *args: int) -> None:
        """Run a callback; a bug in one is reported, not fatal, unless it repeats."""
        try:
            fn(*args)
        except Exception:
            import traceback

            traceback.print_exc()
            self._errors += 1
            if self._errors > MAX_ERRORS:
                raise
        else:
            self._errors = 0

    def stop(self) -> None:
        self.running = False


def _noop(_signum: int, _frame: object) -> None:
    pass
