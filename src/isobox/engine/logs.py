"""Reading Docker's json-file logs: rotated files in order, --tail, --since,
--until, and --follow while the container runs."""

from __future__ import annotations

import collections
import datetime
import json
import os
import time
from collections.abc import Callable, Iterator

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
    def wanted(entry: Entry) -> bool:
        if since is None and until is None:
            return True
        ts = parse_time(entry[2])
        return (since is None or ts >= since) and (until is None or ts <= until)

    entries: collections.deque[Entry] | list[Entry]
    entries = collections.deque(maxlen=tail) if tail is not None and tail >= 0 else []
    position = 0
    for name in _files(path):
        with open(name, "rb") as f:
            for line in f:
                entry = _decode(line)
                if entry is not None and wanted(entry):
                    entries.append(entry)
            if name == path:
                position = f.tell()
    if tail == 0:
        entries.clear()
    yield from entries
    if not follow:
        return
    inode = os.stat(path).st_ino if os.path.exists(path) else 0
    pending = b""
    while True:
        alive = running()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_ino != inode or st.st_size < position):
            inode, position, pending = st.st_ino, 0, b""  # rotated
        if st is not None and st.st_size > position:
            with open(path, "rb") as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                entry = _decode(line)
                if entry is not None and wanted(entry):
                    if until is not None and parse_time(entry[2]) > until:
                        return
                    yield entry
            continue
        if not alive:
            return
        time.sleep(0.05)
