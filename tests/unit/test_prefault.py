"""isobox.linux.prefault: the pages a fork came to own are found from
/proc/self/pagemap, and a later fork of the same parent copies exactly those
ahead, without writing to them."""

from __future__ import annotations

import ctypes
import mmap
import os
from array import array
from collections.abc import Callable, Iterator

import pytest

from isobox.linux import prefault

PAGES = 64


def _in_fork(work: Callable[[], bytes]) -> bytes:
    """What ``work`` returns, run in a fork of this process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            data = work()
            os.write(w, len(data).to_bytes(8, "little") + data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        data = f.read(size)
    os.waitpid(pid, 0)
    return data


def _address(buf: mmap.mmap) -> int:
    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view  # an exported buffer could not be closed


def _covered(ranges: bytes, start: int, end: int) -> int:
    """How many pages of [start, end) ``ranges`` holds."""
    pairs = array("Q", ranges)
    total = 0
    for i in range(0, len(pairs), 2):
        low, high = max(start, pairs[i]), min(end, pairs[i + 1])
        total += max(0, high - low) // prefault.PAGE
    return total


@pytest.fixture
def shared_buffer() -> Iterator[tuple[mmap.mmap, int]]:
    """A private anonymous mapping of this process, every page written
    (so a fork shares them all copy-on-write); its address."""
    buf = mmap.mmap(-1, PAGES * prefault.PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.write(b"x" * len(buf))
    yield buf, _address(buf)
    buf.close()


def test_a_fork_owns_the_pages_it_wrote_to_and_no_others(shared_buffer: tuple[mmap.mmap, int]) -> None:
    buf, address = shared_buffer
    end = address + len(buf)

    def write_half() -> bytes:
        for page in range(0, PAGES, 2):
            buf[page * prefault.PAGE] = ord("y")
        return prefault.owned_pages()

    owned = _in_fork(write_half)
    assert _covered(owned, address, end) == PAGES // 2
    untouched = _in_fork(prefault.owned_pages)
    assert _covered(untouched, address, end) == 0
    assert _covered(prefault.owned_pages(), address, end) == PAGES  # the parent's own


def test_populate_copies_the_learned_pages_ahead_unchanged(shared_buffer: tuple[mmap.mmap, int]) -> None:
    buf, address = shared_buffer
    end = address + len(buf)

    def write_all() -> bytes:
        buf[:] = b"y" * len(buf)
        return prefault.owned_pages()

    learned = _in_fork(write_all)
    assert prefault.count(learned) >= PAGES

    def populate_then_look() -> bytes:
        copied = prefault.populate(learned)
        return (copied.to_bytes(8, "little") + buf[:1] + buf[-1:] + prefault.owned_pages())

    result = _in_fork(populate_then_look)
    copied, contents, owned = int.from_bytes(result[:8], "little"), result[8:10], result[10:]
    assert copied >= PAGES
    assert contents == b"xx"  # copied, not written to
    assert _covered(owned, address, end) == PAGES


def test_ranges_outside_the_mappings_are_skipped() -> None:
    gone = mmap.mmap(-1, 4 * prefault.PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    address = _address(gone)
    stale = array("Q", [address, address + 4 * prefault.PAGE]).tobytes()
    gone.close()  # unmapped: a range learned in a fork that had it
    assert prefault.count(stale) == 4
    assert prefault.populate(stale) == 0


def test_populate_stops_when_told(shared_buffer: tuple[mmap.mmap, int]) -> None:
    buf, address = shared_buffer
    assert PAGES > prefault.CHECK_EVERY
    ranges = array("Q")  # one range per page
    for at in range(address, address + len(buf), prefault.PAGE):
        ranges.extend((at, at + prefault.PAGE))
    looks = []

    def stop() -> bool:
        looks.append(1)
        return len(looks) > 1  # work arrives after the first batch

    def populate_then_count() -> bytes:
        return prefault.populate(ranges.tobytes(), stop=stop).to_bytes(8, "little")

    copied = int.from_bytes(_in_fork(populate_then_count), "little")
    assert copied == prefault.CHECK_EVERY  # one batch, then it stopped
