"""engine.logs.read_log with follow: a follower reads through its own open
file, as Docker's does, so a log rotated or removed under it (a container
removed before its client read the stream to its end) is read to its end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from isobox.engine.logs import read_log


def _line(text: str) -> bytes:
    return json.dumps({"log": text, "stream": "stdout",
                       "time": "2026-11-28T12:00:00.000000000Z"}).encode() + b"\n"


def _texts(entries: Iterator[tuple[str, str, str]], count: int) -> list[str]:
    return [next(entries)[1] for _ in range(count)]


def test_a_log_removed_under_the_follower_is_read_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    log.write_bytes(_line("one\n"))
    alive = [True]
    entries = read_log(str(log), follow=True, running=lambda: alive[0])
    assert _texts(entries, 1) == ["one\n"]
    with open(log, "ab") as f:
        f.write(_line("two\n"))  # written after the follower's last look...
    os.unlink(log)  # ...then the container is removed with its log
    alive[0] = False
    assert [e[1] for e in entries] == ["two\n"]


def test_a_rotated_log_is_followed_into_the_new_file(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    log.write_bytes(_line("a\n"))
    alive = [True]
    entries = read_log(str(log), follow=True, running=lambda: alive[0])
    assert _texts(entries, 1) == ["a\n"]
    with open(log, "ab") as f:
        f.write(_line("b\n"))
    os.rename(log, f"{log}.1")
    log.write_bytes(_line("c\n"))
    alive[0] = False
    assert [e[1] for e in entries] == ["b\n", "c\n"]


def test_no_follow_reads_rotated_files_first(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    Path(f"{log}.1").write_bytes(_line("old\n"))
    log.write_bytes(_line("new\n"))
    assert [e[1] for e in read_log(str(log))] == ["old\n", "new\n"]
    assert [e[1] for e in read_log(str(log), tail=1)] == ["new\n"]
