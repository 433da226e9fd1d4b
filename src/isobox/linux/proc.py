"""Facts read from /proc: process start times, liveness, mount tables, memory."""

from __future__ import annotations

import os
from types import SimpleNamespace


def stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    return raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> int:
    """Start time in clock ticks since boot: with the pid, it names one process."""
    return int(stat_fields(pid)[19])


def state_letter(pid: int) -> str:
    return stat_fields(pid)[0]


def is_alive(pid: int, expected_start: int | None = None) -> bool:
    """True when pid runs (not a zombie) and, if given, started when expected."""
    if pid <= 0:
        return False
    try:
        fields = stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False
    if fields[0] in ("Z", "X"):
        return False
    return expected_start is None or int(fields[19]) == expected_start


class MountInfo(SimpleNamespace):
    """One line of /proc/<pid>/mountinfo."""

    mount_id: int
    parent_id: int
    root: str
    mountpoint: str
    options: str
    optional: str
    fstype: str
    source: str
    super_options: str


def _unescape(value: str) -> str:
    return value.replace("\\040", " ").replace("\\011", "\t").replace(
        "\\012", "\n").replace("\\134", "\\")


def mountinfo(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    result = []
    with open(path) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a = left.split(" ")
            b = right.split(" ")
            result.append(MountInfo(
                mount_id=int(a[0]), parent_id=int(a[1]), root=_unescape(a[3]),
                mountpoint=_unescape(a[4]), options=a[5], optional=" ".join(a[6:]),
                fstype=b[0], source=_unescape(b[1]) if len(b) > 1 else "",
                super_options=b[2] if len(b) > 2 else "",
            ))
    return result


def mount_of(path: str, table: list[MountInfo] | None = None) -> MountInfo:
    """The mount that holds path (longest matching mountpoint)."""
    path = os.path.realpath(path)
    best: MountInfo | None = None
    for m in table if table is not None else mountinfo():
        mp = m.mountpoint
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
                best is None or len(mp) >= len(best.mountpoint)):
            best = m
    if best is None:
        raise FileNotFoundError(path)
    return best


def total_memory(meminfo: str = "/proc/meminfo") -> int:
    """The machine's memory in bytes (MemTotal), 0 when unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cap_last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())
