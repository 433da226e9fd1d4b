"""Reading Docker's json-file logs: rotated files in order, --tail, --since,
--until, and --follow while the container runs."""

from __future__ import annotations

import collections
import datetime
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import IO

Entry = tuple[str, str, str]  # stream, text, RFC 3339 time


def parse_time(text: str) -> float:
    """RFC 3339 (nanoseconds allowed) to a POSIX timestamp."""
    t = text.replace("Z", "+00:00")
    if "." in t:
        head, _, tail = t.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        t = f"{head}.{digits[:6]}{tail[len(digits):]}"
    return datetime.datetime.fromisoformat(t).timestamp()


def parse_since(text: str, now: float | None = None) -> float:
    """Docker's --since/--until: a timestamp, RFC 3339 date, or a duration ago (10m, 1h30m)."""
    now = time.time() if now is None else now
    try:
        return float(text)
    except ValueError:
        pass
    total, number = 0.0, ""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    i = 0
    ok = bool(text)
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = text[i:i + 2] if text[i:i + 2] in units else text[i]
        if unit not in units or not number:
            ok = False
            break
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if ok and not number:
        return now - total
    try:
        return parse_time(text if "T" in text else text + "T00:00:00Z")
    except ValueError:
        from isobox.errors import InvalidArgument

        raise InvalidArgument(f"invalid time or duration {text!r}") from None


def _files(path: str) -> list[str]:
    rotated = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        rotated.append(f"{path}.{n}")
        n += 1
    return [*reversed(rotated), path] if os.path.exists(path) else list(reversed(rotated))


def _decode(line: bytes) -> Entry | None:
    try:
        record = json.loads(line)
        return record["stream"], record["log"], record["time"]
    except (ValueError, KeyError, TypeError):
        return None  # a record cut by a crash mid-write


def read_log(path: str, *, follow: bool = False, tail: int | None = None,
             since: float | None = None, until: float | None = None,
             running: Callable[[], bool] = lambda: False) -> Iterator[Entry]:
    """The json-file log's records; with ``follow``, then those written
    after, until ``running()`` says the container is gone and nothing new
    is left. Like Docker's, a follower reads through its own open file: a
    log rotated, or removed with its container (``docker run --rm``, or a
    client that removes it before reading the stream to its end), is still
    read to its end."""
    def wanted(entry: Entry) -> bool:
        if since is None and until is None:
            return True
        ts = parse_time(entry[2])
        return (since is None or ts >= since) and (until is None or ts <= until)

    entries: collections.deque[Entry] | list[Entry]
    entries = collections.deque(maxlen=tail) if tail is not None and tail >= 0 else []
    current = _open(path) if follow else None
    try:
        for name in _files(path):
            if name == path and current is not None:
                _collect(current, entries, wanted)  # and keep it open, for the follow
                continue
            with open(name, "rb") as f:
                _collect(f, entries, wanted)
        if tail == 0:
            entries.clear()
        yield from entries
        if follow:
            yield from _follow(path, current, wanted, until, running)
    finally:
        if current is not None:
            current.close()


def _follow(path: str, f: IO[bytes] | None, wanted: Callable[[Entry], bool],
            until: float | None, running: Callable[[], bool]) -> Iterator[Entry]:
    pending = b""
    while True:
        alive = running()  # before the read: an end seen here is read to its last line
        chunk = f.read() if f is not None else b""
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                entry = _decode(line)
                if entry is not None and wanted(entry):
                    if until is not None and parse_time(entry[2]) > until:
                        return
                    yield entry
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None  # removed: what we hold open has been read
        if st is not None and (f is None or st.st_ino != os.fstat(f.fileno()).st_ino):
            if f is not None:  # rotated: the old file is read to its end; on to the new
                f.close()
            f, pending = _open(path), b""
            continue
        if f is not None and st is not None and st.st_size < f.tell():
            f.seek(0)  # truncated in place
            pending = b""
            continue
        if not alive:
            return
        time.sleep(0.05)


def _collect(f: IO[bytes], entries: collections.deque[Entry] | list[Entry],
             wanted: Callable[[Entry], bool]) -> None:
    for line in f:
        entry = _decode(line)
        if entry is not None and wanted(entry):
            entries.append(entry)


def _open(path: str) -> IO[bytes] | None:
    try:
        return open(path, "rb")  # held across the generator's life: closed in read_log
    except FileNotFoundError:
        return None
