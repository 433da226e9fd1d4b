"""Docker's json-file log driver: one JSON object per line of output.

``{"log": "text\\n", "stream": "stdout", "time": "2026-11-28T05:29:33.123456789Z"}``

Lines are cut at newlines; a line longer than 16 KiB is written in 16 KiB
pieces without a newline (Docker's partial messages), and whatever is left
without a newline is written as-is when the shim flushes (the container
exited). Each record is one ``write`` on an ``O_APPEND`` file, so a reader,
or a shim killed at any point, never sees half a record.

Rotation (``max_size`` > 0) follows Docker: before a record is written, if
the file has reached ``max_size``, ``log.(n-1)`` becomes ``log.n`` ... ``log``
becomes ``log.1`` and a new ``log`` starts; ``max_file`` counts the current
file, and with ``max_file`` 1 the file is truncated instead.
"""

from __future__ import annotations

import os
import sys
import time
from json.encoder import encode_basestring

from isobox.shim.config import rfc3339

_encode = encode_basestring  # a JSON string literal, non-ASCII kept as UTF-8

PARTIAL_LIMIT = 16 * 1024
STREAMS = ("stdout", "stderr")

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable


class JsonFileWriter:
    def __init__(self, path: str, max_size: int = 0, max_file: int = 1,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self.max_size = max_size
        self.max_file = max(1, max_file)
        self.clock = clock
        self._pending = {name: bytearray() for name in STREAMS}
        self._fd = self._open(truncate=False)
        self.size = os.fstat(self._fd).st_size
        self._failed = False
        self._second = -1
        self._prefix = ""

    def _open(self, truncate: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        return os.open(self.path, flags | (os.O_TRUNC if truncate else 0), 0o640)

    def write(self, stream: str, data: bytes) -> None:
        """Log output of a stream: whole lines now, the rest when it ends or grows."""
        buf = self._pending[stream]
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            while end + 1 - start > PARTIAL_LIMIT:
                self._record(stream, bytes(buf[start:start + PARTIAL_LIMIT]))
                start += PARTIAL_LIMIT
            self._record(stream, bytes(buf[start:end + 1]))
            start = end + 1
        while len(buf) - start >= PARTIAL_LIMIT:
            self._record(stream, bytes(buf[start:start + PARTIAL_LIMIT]))
            start += PARTIAL_LIMIT
        del buf[:start]

    def flush(self) -> None:
        """Write what is left of each stream as partial records."""
        for stream, buf in self._pending.items():
            if buf:
                self._record(stream, bytes(buf))
                buf.clear()

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            os.close(self._fd)
            self._fd = -1

    def _timestamp(self) -> str:
        ns = self.clock()
        second, frac = divmod(ns, 1_000_000_000)
        if second != self._second:  # strftime once a second, not once a line
            self._second = second
            self._prefix = rfc3339(second * 1_000_000_000)[:-11]
        return f"{self._prefix}.{frac:09d}Z"

    def _record(self, stream: str, line: bytes) -> None:
        # json.dumps of the dict, by hand: the same bytes, a third of the time
        record = (f'{{"log":{_encode(line.decode("utf-8", "replace"))},"stream":"{stream}",'
                  f'"time":"{self._timestamp()}"}}\n').encode()
        try:
            if self.max_size > 0 and self.size >= self.max_size:
                self._rotate()
            n = os.write(self._fd, record)
            while n < len(record):  # only on a full disk or a signal: finish the record
                n += os.write(self._fd, record[n:])
            self.size += n
        except OSError as exc:
            if not self._failed:  # say it once; keep serving the container
                print(f"isobox-shim: writing {self.path}: {exc}", file=sys.stderr)
            self._failed = True
        else:
            self._failed = False

    def _rotate(self) -> None:
        if self.max_file < 2:
            os.close(self._fd)
            self._fd = self._open(truncate=True)
            self.size = 0
            return
        for n in range(self.max_file - 1, 1, -1):
            try:
                os.rename(f"{self.path}.{n - 1}", f"{self.path}.{n}")
            except FileNotFoundError:
                pass
        os.rename(self.path, f"{self.path}.1")
        os.close(self._fd)
        self._fd = self._open(truncate=True)
        self.size = 0
