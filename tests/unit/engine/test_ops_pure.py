"""The pure parts of the operations verbs: ps parsing, cp argument and
Docker path rules, sizes and tables, event filters and lines, stats
arithmetic, update checks, and the fd-based tree copy (symlinks refused)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from isobox.cli.fs_cmds import split_cp_arg
from isobox.cli.ops_common import bytes_size, human_size, tabwriter
from isobox.engine import events, stats, update
from isobox.engine.copy import _plan
from isobox.engine.top import parse_ps
from isobox.errors import Conflict, InvalidArgument, NotFound
from isobox.images import fstree


def test_parse_ps_keeps_container_pids_threads_and_long_commands() -> None:
    out = ("UID PID PPID C STIME TTY TIME CMD\n"
           "root 1 0 0 06:00 ? 00:00:01 /sbin/init splash\n"
           "root 42 1 0 06:00 ? 00:00:00 sleep 300 --with args\n"
           "root - - 0 06:00 ? 00:00:00 -\n"
           "root 43 1 0 06:00 ? 00:00:00 other\n"
           "root - - 0 06:00 ? 00:00:00 -\n")
    titles, rows = parse_ps(out, {42})
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "42", "1", "0", "06:00", "?", "00:00:00", "sleep 300 --with args"],
                    ["root", "-", "-", "0", "06:00", "?", "00:00:00", "-"]]
    with pytest.raises(InvalidArgument, match="Couldn't find PID field"):
        parse_ps("USER COMMAND\nroot x\n", {1})
    with pytest.raises(InvalidArgument, match="Unexpected pid 'x'"):
        parse_ps("PID CMD\nx y\n", {1})


@pytest.mark.parametrize("arg, want", [
    ("web:/etc/passwd", ("web", "/etc/passwd")),
    ("web:", ("web", "")),
    ("/abs/with:colon", ("", "/abs/with:colon")),
    ("./rel:colon", ("", "./rel:colon")),
    ("plain", ("", "plain")),
    ("-", ("", "-")),
])
def test_split_cp_arg(arg: str, want: tuple[str, str]) -> None:
    assert split_cp_arg(arg) == want


def _st(mode: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, 0, 0, 0, 0, 0, 0))


def test_docker_copy_rules() -> None:
    d, f = _st(stat.S_IFDIR | 0o755), _st(stat.S_IFREG | 0o644)
    assert _plan(True, False, "src", "/dst", d, "dst") == (True, "src")
    assert _plan(True, True, "src", "/dst", d, "dst") == (True, ".")
    assert _plan(False, False, "a", "/dst", d, "dst") == (True, "a")
    assert _plan(False, False, "a", "/dst", f, "dst") == (False, "dst")
    assert _plan(True, False, "src", "/new", None, "new") == (False, "new")
    assert _plan(False, False, "a", "/new", None, "new") == (False, "new")
    with pytest.raises(Conflict, match="cannot copy directory"):
        _plan(True, False, "src", "/file", f, "file")
    with pytest.raises(NotFound, match="no such directory"):
        _plan(False, False, "a", "/new/", None, "new")
    with pytest.raises(InvalidArgument, match="not a directory"):
        _plan(False, False, "a", "/file/", f, "file")


def test_sizes_and_tabwriter() -> None:
    assert human_size(0) == "0B"
    assert human_size(2048) == "2.048kB"
    assert human_size(1234567, 3) == "1.23MB"
    assert bytes_size(1536) == "1.5KiB"
    assert bytes_size(32 << 20) == "32MiB"
    assert tabwriter([["PID", "CMD"], ["1", "sleep 1"]], minwidth=20) == (
        "PID" + " " * 17 + "CMD\n" + "1" + " " * 19 + "sleep 1\n")


def _event(seq: int, t: float, type_: str, action: str, actor: str,
           **attrs: str) -> events.Event:
    return events.Event(seq, t, type_, action, actor, dict(attrs))


def test_event_message_line_and_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    import time as time_mod

    time_mod.tzset()
    ev = _event(1, 1795845600.5, "container", "start", "abc123", name="web", image="busybox")
    assert ev.line() == ("2026-11-28T06:00:00.500000000Z container start abc123 "
                         "(image=busybox, name=web)")
    msg = ev.message()
    assert msg["status"] == "start" and msg["from"] == "busybox" and msg["id"] == "abc123"
    assert msg["time"] == 1795845600 and msg["timeNano"] == 1795845600500000000
    volume = _event(2, 1.0, "volume", "create", "v1", driver="local").message()
    assert "status" not in volume and volume["Actor"]["ID"] == "v1"

    match = events.EventFilter(["type=container", "event=start", "event=stop",
                                "container=web"])
    assert match(ev)
    assert not match(_event(3, 1.0, "container", "die", "abc123", name="web"))
    assert events.EventFilter(["container=abc"])(ev)  # an id prefix
    assert events.EventFilter(["image=busybox:latest"])(
        _event(4, 1.0, "container", "start", "x", image="busybox:latest"))
    assert events.EventFilter(["event=exec_start"])(
        _event(5, 1.0, "container", "exec_start: sh -c ls", "x"))
    assert not events.EventFilter(["event=exec_die"])(
        _event(6, 1.0, "container", "exec_die: x", "x"))
    assert events.EventFilter(["label=name=web"])(ev)
    with pytest.raises(InvalidArgument):
        events.EventFilter(["nonsense=1"])
    with pytest.raises(InvalidArgument):
        events.EventFilter(["type=bogus"])


class _Store:
    def __init__(self) -> None:
        self.rows: list[tuple[int, float, str, str, str, dict[str, str]]] = []

    def events(self, after_seq: int = 0, since: float | None = None,
               until: float | None = None) -> list[Any]:
        return [r for r in self.rows if r[0] > after_seq
                and (since is None or r[1] >= since) and (until is None or r[1] <= until)]


def test_follow_streams_new_events_until_the_end() -> None:
    store = _Store()
    store.rows.append((1, 5.0, "container", "old", "a", {}))
    now = [10.0]

    def sleep(_: float) -> None:
        now[0] += 1
        store.rows.append((len(store.rows) + 1, now[0], "container", f"at{now[0]:.0f}",
                           "a", {}))

    stream = events.follow(store, until=13.5, clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    assert [e.action for e in stream] == ["old", "at11", "at12", "at13"]
    now[0] = 20.0
    live = events.follow(store, clock=lambda: now[0], sleep=sleep)  # type: ignore[arg-type]
    assert next(live).action == "at21"


def test_stats_arithmetic() -> None:
    mem = {"usage": {"usage": 10_000, "limit": 50_000},
           "raw": {"total_inactive_file": 2_000}}
    assert stats.memory_usage(mem) == (8_000, 50_000)
    assert stats.memory_usage({"usage": {"usage": 100}, "raw": {"inactive_file": 500}}) \
        == (100, 0)
    blk = {"ioServiceBytesRecursive": [{"op": "Read", "value": 4096},
                                       {"op": "Write", "value": 512},
                                       {"op": "Total", "value": 4608}]}
    assert stats.block_io(blk) == (4096, 512)
    before = stats.Sample("id", "n", True, cpu_total=1_000, system_cpu=10_000, online_cpus=2)
    after = stats.Sample("id", "n", True, cpu_total=2_000, system_cpu=20_000, online_cpus=2,
                         mem_usage=25, mem_limit=100)
    u = stats.usage(before, after)
    assert u.cpu_percent == pytest.approx(20.0) and u.mem_percent == pytest.approx(25.0)
    assert stats.usage(None, after).cpu_percent == 0.0


def test_update_rules_and_resources() -> None:
    assert update.resources_of({"Memory": 64 << 20, "NanoCpus": 1_500_000_000,
                                "PidsLimit": -1, "CpusetCpus": "0"}) == {
        "memory": {"limit": 64 << 20},
        "cpu": {"cpus": "0", "period": 100000, "quota": 150000},
        "pids": {"limit": -1}}
    with pytest.raises(Conflict, match="memoryswap"):
        update._check({"Memory": 64 << 20}, {"Memory": 1 << 30})
    update._check({"Memory": 64 << 20}, {"Memory": 1 << 30, "MemorySwap": 2 << 30})
    update._check({}, {"Memory": 1 << 30})
    with pytest.raises(InvalidArgument, match="Minimum memory limit"):
        update._check({}, {"Memory": 1024})
    with pytest.raises(Conflict, match="Nano CPUs"):
        update._check({"CpuQuota": 50000}, {"NanoCpus": 10**9})


# -- fstree: copies that never follow symlinks ------------------------------------------

def _tree(base: Path) -> Path:
    src = base / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("data")
    (src / "hard").write_text("x")
    os.link(src / "hard", src / "hard2")
    (src / "up").symlink_to("/")
    return src


def test_walk_and_extract_round_trip(tmp_path: Path) -> None:
    _tree(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    out = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        nodes = fstree.walk(parent, "src", "copy")
        sink = fstree.Extractor(out, owner="none")
        for node in nodes:
            sink.add(node)
        sink.finish()
    finally:
        os.close(parent)
        os.close(out)
    assert (dest / "copy" / "d" / "f").read_text() == "data"
    assert os.readlink(dest / "copy" / "up") == "/"
    assert os.stat(dest / "copy" / "hard").st_ino == os.stat(dest / "copy" / "hard2").st_ino


def _tar(*members: tuple[str, bytes | None, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data or b"")
                tf.addfile(info, io.BytesIO(data or b""))
    buf.seek(0)
    return buf


@pytest.mark.parametrize("members", [
    [("esc", None, "/"), ("esc/owned", b"x", "")],
    [("../owned", b"x", "")],
    [("pre/owned", b"x", "")],
])
def test_extractor_refuses_to_leave_the_destination(tmp_path: Path, members: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "pre").symlink_to(outside)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sink = fstree.Extractor(fd, owner="none")
        with pytest.raises(InvalidArgument):
            for node in fstree.tar_nodes(_tar(*members)):
                sink.add(node)
    finally:
        os.close(fd)
    assert list(outside.iterdir()) == []


def test_extractor_keeps_directories_and_files_apart(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "f").write_text("old")
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sink = fstree.Extractor(fd, owner="none")
        with pytest.raises(Conflict, match="cannot overwrite directory"):
            sink.add(fstree.Node("d", fstree.REG, 0o644))
        with pytest.raises(Conflict, match="cannot overwrite non-directory"):
            sink.add(fstree.Node("f", fstree.DIR, 0o755))
        sink.add(fstree.Node("f", fstree.REG, 0o600, size=3, data=[b"new"]))
    finally:
        os.close(fd)
    assert (dest / "f").read_text() == "new"
    assert stat.S_IMODE(os.stat(dest / "f").st_mode) == 0o600
