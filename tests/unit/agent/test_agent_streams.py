"""Stream bookkeeping: a stream found by its number, its process or its fds."""

from __future__ import annotations

import pytest

from isobox.agent.streams import Stream, StreamTable
from isobox.errors import Conflict, NotFound
from isobox.taskapi.frames import STDERR, STDOUT


def test_table_indexes_streams():
    table = StreamTable()
    piped = Stream(1, 100, outputs={10: STDOUT, 11: STDERR}, stdin=12, is_init=True)
    tty = Stream(2, 200, outputs={20: STDOUT}, stdin=20, master=20)
    table.add(piped)
    table.add(tty)
    assert table.get(1) is piped and table.find(2) is tty and table.find(3) is None
    assert table.by_pid(200) is tty
    assert {fd: table.by_fd(fd) for fd in (10, 11, 12, 20)} == {
        10: piped, 11: piped, 12: piped, 20: tty}
    assert piped.fds() == {10, 11, 12} and tty.fds() == {20}
    assert tty.tty and not piped.tty
    with pytest.raises(NotFound):
        table.get(3)
    with pytest.raises(Conflict):
        table.add(Stream(1, 300, outputs={}))
    table.forget_fd(11)
    assert table.by_fd(11) is None
    table.remove(piped)
    assert table.find(1) is None and table.by_pid(100) is None and table.by_fd(10) is None
    assert table.all() == [tty] and len(table) == 1


def test_an_exited_process_is_not_found_by_pid():
    table = StreamTable()
    stream = Stream(1, 100, outputs={10: STDOUT})
    table.add(stream)
    stream.status = 0
    assert stream.exited
    assert table.by_pid(100) is None  # the pid may be another process's now
    assert table.get(1) is stream  # still draining
    reused = Stream(2, 100, outputs={})
    table.add(reused)
    assert table.by_pid(100) is reused
    table.remove(stream)
    assert table.by_pid(100) is reused
