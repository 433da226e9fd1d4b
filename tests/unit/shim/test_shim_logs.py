"""The json-file writer: Docker's records, partial lines, rotation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from isobox.shim.logs import PARTIAL_LIMIT, JsonFileWriter

RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


def records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_become_records_with_stream_and_time(tmp_path):
    log = tmp_path / "c-json.log"
    w = JsonFileWriter(str(log), clock=lambda: 1_795_000_000_123_456_789)
    w.write("stdout", b"one\ntwo\nthr")
    w.write("stderr", b"err\n")
    w.write("stdout", b"ee\n")
    w.close()
    assert records(log) == [
        {"log": "one\n", "stream": "stdout", "time": "2026-11-18T11:06:40.123456789Z"},
        {"log": "two\n", "stream": "stdout", "time": "2026-11-18T11:06:40.123456789Z"},
        {"log": "err\n", "stream": "stderr", "time": "2026-11-18T11:06:40.123456789Z"},
        {"log": "three\n", "stream": "stdout", "time": "2026-11-18T11:06:40.123456789Z"},
    ]
    # Docker's compact encoding, key order log, stream, time
    assert log.read_text().splitlines()[0].startswith('{"log":"one\\n","stream":"stdout","time":"')


def test_real_clock_gives_rfc3339_nano(tmp_path):
    log = tmp_path / "l"
    w = JsonFileWriter(str(log))
    w.write("stdout", b"x\n")
    w.close()
    assert RFC3339_NANO.fullmatch(records(log)[0]["time"])


def test_partial_line_flushed_on_close_and_streams_kept_apart(tmp_path):
    log = tmp_path / "l"
    w = JsonFileWriter(str(log))
    w.write("stdout", b"no newline")
    w.write("stderr", b"half")
    assert log.read_text() == ""
    w.close()
    assert [(r["log"], r["stream"]) for r in records(log)] == [
        ("no newline", "stdout"), ("half", "stderr")]


def test_long_line_cut_in_16k_partials(tmp_path):
    log = tmp_path / "l"
    w = JsonFileWriter(str(log))
    w.write("stdout", b"a" * (PARTIAL_LIMIT + 10))
    got = records(log)
    assert [len(r["log"]) for r in got] == [PARTIAL_LIMIT]
    w.write("stdout", b"b" * 5 + b"\n" + b"c" * (2 * PARTIAL_LIMIT + 1) + b"\nd")
    w.close()
    sizes = [(len(r["log"]), r["log"][-1:]) for r in records(log)]
    assert sizes == [(PARTIAL_LIMIT, "a"), (16, "\n"), (PARTIAL_LIMIT, "c"), (PARTIAL_LIMIT, "c"),
                     (2, "\n"), (1, "d")]


def test_invalid_utf8_replaced_and_non_ascii_kept(tmp_path):
    log = tmp_path / "l"
    w = JsonFileWriter(str(log))
    w.write("stdout", "héllo ✓\n".encode() + b"\xff\n")
    w.close()
    assert [r["log"] for r in records(log)] == ["héllo ✓\n", "\ufffd\n"]


def test_appends_to_an_existing_log(tmp_path):
    log = tmp_path / "l"
    for word in (b"first\n", b"second\n"):
        w = JsonFileWriter(str(log))
        w.write("stdout", word)
        w.close()
    assert [r["log"] for r in records(log)] == ["first\n", "second\n"]


def test_rotation_keeps_max_file_files(tmp_path):
    log = tmp_path / "c-json.log"
    w = JsonFileWriter(str(log), max_size=200, max_file=3)
    for i in range(30):
        w.write("stdout", f"line {i:02d}\n".encode())
    w.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    # Docker rotates before a write once the file has reached max_size:
    # a file holds up to max_size plus one record.
    for p in tmp_path.iterdir():
        assert p.stat().st_size < 200 + 100
    lines = [r["log"] for name in ("c-json.log.2", "c-json.log.1", "c-json.log")
             for r in records(tmp_path / name)]
    assert lines == [f"line {i:02d}\n" for i in range(30 - len(lines), 30)]
    assert records(log)[-1]["log"] == "line 29\n"


def test_rotation_with_one_file_truncates(tmp_path):
    log = tmp_path / "l"
    w = JsonFileWriter(str(log), max_size=100, max_file=1)
    for i in range(10):
        w.write("stdout", f"line {i}\n".encode())
    w.close()
    assert [p.name for p in tmp_path.iterdir()] == ["l"]
    got = [r["log"] for r in records(log)]
    assert got[-1] == "line 9\n" and len(got) < 10


def test_rotation_continues_from_existing_size(tmp_path):
    log = tmp_path / "l"
    log.write_text('{"log":"old\\n","stream":"stdout","time":"x"}\n' * 5)
    w = JsonFileWriter(str(log), max_size=100, max_file=2)
    w.write("stdout", b"new\n")
    w.close()
    assert [r["log"] for r in records(log)] == ["new\n"]
    assert len(records(tmp_path / "l.1")) == 5
