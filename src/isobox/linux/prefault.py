"""Copy-on-write ahead of need, for forks of a large warm process.

A fork shares its parent's pages until it writes to one; each first write
then costs a page fault and a copy. A Python fork writes to almost every
object it touches (reference counts), so a command run in a fresh fork of
the command server takes ~1,900 such faults, 5-7 ms of a 45 ms ``run``.
A fork made ahead of its work (a spare) can take those faults while it
waits: :func:`owned_pages` tells, at the end of a command, which pages its
process came to own (copied or new), and :func:`populate` makes the next
spare copy the same ones now (``MADV_POPULATE_WRITE``, Linux 5.14), where
they are still shared with the parent.

Ranges travel as an ``array('Q')`` of (start, end) pairs, in bytes."""

from __future__ import annotations

import errno
import os
from array import array
from collections.abc import Callable

from isobox.linux import libc

PAGE = os.sysconf("SC_PAGE_SIZE")
MADV_POPULATE_WRITE = 23
ENTRY = 8  # bytes per page in /proc/self/pagemap
# In an entry's last byte: bit 63 "present" (0x80), bit 56 "exclusively
# mapped" (0x01): a present page no other process maps.
_OWNED = bytes(1 if value & 0x81 == 0x81 else 0 for value in range(256))
_SKIPPED = (b"[stack]", b"[vvar]", b"[vsyscall]", b"[vdso]")


def private_writable() -> list[tuple[int, int]]:
    """(start, end) of this process's private writable mappings, in order:
    the ones a fork shares copy-on-write (the stack excepted)."""
    with open("/proc/self/maps", "rb") as f:
        lines = f.read().splitlines()
    found = []
    for line in lines:
        fields = line.split(maxsplit=5)
        perms = fields[1]
        if perms[:2] != b"rw" or perms[3:4] != b"p":
            continue
        if len(fields) > 5 and fields[5].strip() in _SKIPPED:
            continue
        start, _, end = fields[0].partition(b"-")
        found.append((int(start, 16), int(end, 16)))
    return found


def owned_pages() -> bytes:
    """The pages of :func:`private_writable` this process alone maps."""
    ranges = array("Q")
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, end in private_writable():
            entries = os.pread(fd, (end - start) // PAGE * ENTRY, start // PAGE * ENTRY)
            owned = entries[ENTRY - 1::ENTRY].translate(_OWNED)
            first = owned.find(1)
            while first >= 0:
                after = owned.find(0, first)
                if after < 0:
                    after = len(owned)
                ranges.extend((start + first * PAGE, start + after * PAGE))
                first = owned.find(1, after)
    finally:
        os.close(fd)
    return ranges.tobytes()


def count(ranges: bytes) -> int:
    """How many pages ``ranges`` holds."""
    pairs = array("Q", ranges)
    return sum(pairs[i + 1] - pairs[i] for i in range(0, len(pairs), 2)) // PAGE


#: Ranges copied between two looks at ``populate``'s ``stop``.
CHECK_EVERY = 32


def populate(ranges: bytes, stop: Callable[[], bool] | None = None) -> int:
    """Take a private copy now of every page in ``ranges`` that is still in
    one of this process's private writable mappings, until ``stop`` says
    so (work has come: what is left is copied on demand); the pages copied
    (0 where the kernel lacks MADV_POPULATE_WRITE)."""
    pairs = array("Q", ranges)
    maps = private_writable()
    done = 0
    m = 0
    for i in range(0, len(pairs) - 1, 2):
        if stop is not None and i % (2 * CHECK_EVERY) == 0 and stop():
            break
        start, end = pairs[i], pairs[i + 1]
        while m < len(maps) and maps[m][1] <= start:
            m += 1
        k = m
        while k < len(maps) and maps[k][0] < end:
            low, high = max(start, maps[k][0]), min(end, maps[k][1])
            try:
                libc.madvise(low, high - low, MADV_POPULATE_WRITE)
                done += (high - low) // PAGE
            except OSError as exc:
                if exc.errno == errno.EINVAL and done == 0 and i == 0:
                    return 0  # an older kernel: nothing to gain here
            k += 1
    return done
