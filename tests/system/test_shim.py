"""The per-container shim, with real runtimes and busybox containers: launch,
start, attach, stdin, tty, stop, restart policies, OOM, a killed shim, the
rootfs mount, a missing command, and its memory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isobox.errors import CommandNotFound, IsoboxError, NotRunning
from isobox.linux import proc
from isobox.shim.client import ShimClient, demux, launch, read_state

RUNTIME = str(Path(sys.executable).parent / "isobox-runtime")
RUNC = shutil.which("runc")
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


class Shims:
    """Container directories with a shim.json; launches and cleans up after them."""

    def __init__(self, tmp_path: Path, bundle: Any) -> None:
        self.tmp = tmp_path
        self.bundle = bundle
        self.runtime_root = tmp_path / "rt"
        self.made: list[tuple[Path, str]] = []

    def make(self, args: list[str], *, runtime: str = "isobox-runtime", tty: bool = False,
             open_stdin: bool = False, stdin_once: bool = False, restart: str = "no",
             max_retries: int = 0, stop_timeout: int = 10,
             edit: Callable[[dict[str, Any]], None] | None = None) -> tuple[Path, str]:
        path, cid = self.bundle(args, terminal=tty, edit=edit)
        d = self.tmp / f"c{len(self.made)}"
        d.mkdir()
        path.rename(d / "bundle")
        rootfs = d / "bundle" / "rootfs"
        rootfs.mkdir()
        (d / "upper").mkdir()
        (d / "work").mkdir()
        config = json.loads((d / "bundle" / "config.json").read_text())
        config["root"] = {"path": str(rootfs), "readonly": False}
        (d / "bundle" / "config.json").write_text(json.dumps(config))
        lower = self.bundle.rootfs
        shim = {
            "id": cid, "bundle": str(d / "bundle"),
            "rootfs_mounts": [{"type": "overlay", "source": "overlay", "options": [
                f"lowerdir={lower}", f"upperdir={d / 'upper'}", f"workdir={d / 'work'}"]}],
            "runtime": runtime, "runtime_root": str(self.runtime_root), "tty": tty,
            "open_stdin": open_stdin, "stdin_once": stdin_once,
            "log_path": str(d / f"{cid}-json.log"), "log_max_size": 0, "log_max_file": 1,
            "restart": {"name": restart, "max_retries": max_retries},
            "stop_signal": 15, "stop_timeout": stop_timeout,
        }
        (d / "shim.json").write_text(json.dumps(shim))
        self.made.append((d, cid))
        return d, cid

    def cleanup(self) -> None:
        for d, cid in self.made:
            pid = _shim_pid(d)
            if pid and proc.is_alive(pid):
                os.kill(pid, signal.SIGKILL)
                _until(lambda p=pid: not proc.is_alive(p), 5)
            subprocess.run([RUNTIME, "--root", str(self.runtime_root), "delete", "--force", cid],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            if RUNC is not None:
                subprocess.run([RUNC, "--root", str(self.runtime_root), "delete", "--force",
                                cid], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            rootfs = str(d / "bundle" / "rootfs")
            while _mounted(rootfs):
                subprocess.run(["umount", "-l", rootfs], capture_output=True, timeout=30)


@pytest.fixture
def shims(tmp_path: Path, bundle: Any) -> Iterator[Shims]:
    s = Shims(tmp_path, bundle)
    yield s
    s.cleanup()


def _shim_pid(d: Path) -> int:
    try:
        return int((d / "shim.pid").read_text())
    except (OSError, ValueError):
        return 0


def _until(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _mounted(path: str) -> bool:
    return any(m.mountpoint == path for m in proc.mountinfo())


def _log(d: Path, cid: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (d / f"{cid}-json.log").read_text().splitlines()]


def _gone(d: Path, pid: int) -> None:
    """The shim finished: exited, socket removed, rootfs unmounted."""
    assert _until(lambda: not proc.is_alive(pid)), "the shim did not exit"
    assert not (d / "shim.sock").exists()
    assert not _mounted(str(d / "bundle" / "rootfs"))


RUNTIMES = ["isobox-runtime", pytest.param(RUNTIME, id="binary")]
if RUNC is not None:
    RUNTIMES.append(pytest.param(RUNC, id="runc"))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_launch_start_wait_and_json_log(shims, runtime):
    d, cid = shims.make(["sh", "-c", "echo out; echo err >&2; exit 3"], runtime=runtime)
    pid = launch(str(d))
    client = ShimClient(str(d))
    state = client.state()
    assert state["status"] == "created" and state["shim_pid"] == pid
    assert proc.is_alive(state["pid"])
    assert _mounted(str(d / "bundle" / "rootfs"))
    client.start()
    assert client.wait(timeout=30) == (3, False)
    _gone(d, pid)
    final = read_state(str(d))
    assert final is not None
    assert final["status"] == "exited" and final["exit_code"] == 3 and final["pid"] == 0
    assert RFC3339_NANO.fullmatch(final["started_at"])
    assert RFC3339_NANO.fullmatch(final["finished_at"])
    assert final["finished_at"] >= final["started_at"]
    records = _log(d, cid)
    assert sorted((r["log"], r["stream"]) for r in records) == [
        ("err\n", "stderr"), ("out\n", "stdout")]
    assert all(RFC3339_NANO.fullmatch(r["time"]) for r in records)
    # the runtime forgot the container; a dead shim's socket answers NotRunning
    assert not (shims.runtime_root / cid).exists()
    with pytest.raises(NotRunning):
        client.state()
    assert client.wait() == (3, False)  # from the final state.json


def test_attach_before_start_sees_output(shims):
    d, _ = shims.make(["sh", "-c", "echo out; echo err >&2; echo more"])
    launch(str(d))
    client = ShimClient(str(d))
    with client.attach(stdout=True, stderr=True) as sock:
        client.start()
        frames = list(demux(sock))
    out = b"".join(p for s, p in frames if s == 1)
    err = b"".join(p for s, p in frames if s == 2)
    assert (out, err) == (b"out\nmore\n", b"err\n")
    assert client.wait() == (0, False)


def test_attach_selected_streams_and_several_clients(shims):
    d, _ = shims.make(["sh", "-c", "sleep 0.2; echo out; echo err >&2"])
    launch(str(d))
    client = ShimClient(str(d))
    with client.attach(stdout=True, stderr=False) as a, \
            client.attach(stdout=False, stderr=True) as b:
        client.start()
        assert list(demux(a)) == [(1, b"out\n")]
        assert list(demux(b)) == [(2, b"err\n")]
    client.wait()


def test_stdin_through_attach(shims):
    d, _ = shims.make(["cat"], open_stdin=True, stdin_once=True)
    launch(str(d))
    client = ShimClient(str(d))
    with client.attach(stdin=True, stdout=True, stderr=True) as sock:
        client.start()
        sock.sendall(b"hello\n")
        sock.sendall(b"world\n")
        sock.shutdown(socket.SHUT_WR)  # stdin_once: the container's stdin closes
        frames = list(demux(sock))
    assert b"".join(p for _, p in frames) == b"hello\nworld\n"
    assert client.wait(timeout=30) == (0, False)


@pytest.mark.parametrize("runtime", RUNTIMES[:1] + RUNTIMES[2:])
def test_tty_with_resize(shims, runtime):
    d, cid = shims.make(["sh", "-c", "read x; stty size; echo done"], runtime=runtime,
                        tty=True, open_stdin=True)
    launch(str(d))
    client = ShimClient(str(d))
    with client.attach(stdin=True, stdout=True) as sock:
        client.start()
        client.resize(31, 101)
        sock.sendall(b"go\n")
        out = b""
        while True:
            data = sock.recv(4096)
            if not data:
                break
            out += data
    assert b"31 101" in out
    assert b"done" in out
    assert client.wait(timeout=30) == (0, False)
    logged = "".join(r["log"] for r in _log(d, cid))
    assert "31 101" in logged and {r["stream"] for r in _log(d, cid)} == {"stdout"}


def test_resize_without_tty_is_refused(shims):
    d, _ = shims.make(["sleep", "300"])
    launch(str(d))
    client = ShimClient(str(d))
    with pytest.raises(Exception, match="no tty"):
        client.resize(10, 10)
    client.kill(signal.SIGKILL)
    assert client.wait() == (137, False)


def test_stop_kills_after_timeout(shims):
    # sh as pid 1 of its namespace, SIGTERM ignored on top of that
    d, _ = shims.make(["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    started = time.monotonic()
    assert client.stop(signal.SIGTERM, 1) == 137
    took = time.monotonic() - started
    assert 1.0 <= took < 6.0
    _gone(d, pid)


def test_sigterm_to_shim_stops_the_container(shims):
    d, _ = shims.make(["sleep", "300"], stop_timeout=1)
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    os.kill(pid, signal.SIGTERM)
    _gone(d, pid)
    final = read_state(str(d))
    assert final is not None and final["status"] == "exited" and final["exit_code"] == 137


def test_restart_on_failure_counts_retries(shims):
    d, cid = shims.make(["sh", "-c", "echo run; exit 1"], restart="on-failure", max_retries=2)
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    assert client.wait(timeout=30) == (1, False)
    _gone(d, pid)
    final = read_state(str(d))
    assert final is not None
    assert (final["status"], final["restart_count"], final["exit_code"]) == ("exited", 2, 1)
    assert [r["log"] for r in _log(d, cid)] == ["run\n"] * 3


def test_always_restarts_until_stopped(shims):
    d, cid = shims.make(["sh", "-c", "echo run; sleep 0.3; exit 0"], restart="always")
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    assert _until(lambda: client.state()["restart_count"] >= 1, 15)
    assert _until(lambda: client.state()["status"] == "running", 15)
    # Stopped once this run has said so: a kill before its echo would log
    # one line fewer than it ran.
    assert _until(lambda: len(_log(d, cid)) == client.state()["restart_count"] + 1, 15)
    code = client.stop(signal.SIGKILL, 1)
    assert code == 137
    _gone(d, pid)
    final = read_state(str(d))
    assert final is not None and final["status"] == "exited" and final["exit_code"] == 137
    count = final["restart_count"]
    time.sleep(0.5)
    assert read_state(str(d)) == final  # no restart after the manual stop
    assert len(_log(d, cid)) == count + 1


def test_oom_killed(shims):
    def limit(spec: dict[str, Any]) -> None:
        spec["linux"]["resources"] = {"memory": {"limit": 16 << 20, "swap": 16 << 20}}

    d, _ = shims.make(["sh", "-c", "head -c 100m /dev/zero | tail"], edit=limit)
    launch(str(d))
    client = ShimClient(str(d))
    client.start()
    code, oom = client.wait(timeout=60)
    assert oom is True
    assert code != 0


def test_killed_shim_leaves_state_and_log_whole(shims):
    d, cid = shims.make(["sh", "-c", "while true; do echo tick; sleep 0.05; done"])
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    init = client.state()["pid"]
    assert _until(lambda: len(_log(d, cid)) >= 3)
    os.kill(pid, signal.SIGKILL)
    assert _until(lambda: not proc.is_alive(pid))
    state = json.loads((d / "state.json").read_text())
    assert state["status"] == "running" and state["pid"] == init
    records = _log(d, cid)  # every line parses: records are written whole
    assert all(r == {"log": "tick\n", "stream": "stdout", "time": r["time"]} for r in records)
    with pytest.raises(NotRunning):
        ShimClient(str(d)).state()
    # Without its monitor the container's stdout has no reader: the next echo
    # gets SIGPIPE and the init dies (reaped by the host's init). The engine
    # cleans up through the runtime and unmounts the rootfs.
    rt = [RUNTIME, "--root", str(shims.runtime_root)]
    subprocess.run([*rt, "kill", cid, "KILL"], capture_output=True, timeout=30)
    subprocess.run([*rt, "delete", "--force", cid], check=True, capture_output=True, timeout=60)
    assert _until(lambda: not proc.is_alive(init))
    assert _mounted(str(d / "bundle" / "rootfs"))
    subprocess.run(["umount", str(d / "bundle" / "rootfs")], check=True, timeout=30)


def test_rootfs_mounted_while_running_and_writable(shims):
    d, _ = shims.make(["sh", "-c", "echo hi > /made-here; sleep 300"])
    pid = launch(str(d))
    rootfs = str(d / "bundle" / "rootfs")
    mount = next(m for m in proc.mountinfo() if m.mountpoint == rootfs)
    assert mount.fstype == "overlay"
    client = ShimClient(str(d))
    client.start()
    assert _until(lambda: (d / "upper" / "made-here").exists())
    client.stop(signal.SIGKILL, 0)
    _gone(d, pid)
    assert (d / "upper" / "made-here").read_text() == "hi\n"  # the upper dir keeps it


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_missing_command_reports_127_and_leaves_nothing(shims, runtime):
    d, cid = shims.make(["no-such-command"], runtime=runtime)
    with pytest.raises(CommandNotFound) as info:
        launch(str(d))
    assert info.value.exit_code == 127
    assert "no-such-command" in str(info.value)
    pid = _shim_pid(d)
    assert pid and _until(lambda: not proc.is_alive(pid))
    assert not _mounted(str(d / "bundle" / "rootfs"))
    assert not (d / "shim.sock").exists()
    assert not (shims.runtime_root / cid).exists()
    state = read_state(str(d))
    assert state is not None and state["status"] == "exited" and state["exit_code"] == 127


def test_pause_resume_and_kill(shims):
    d, _ = shims.make(["sleep", "300"])
    launch(str(d))
    client = ShimClient(str(d))
    client.start()
    client.pause()
    assert client.state()["paused"] is True
    client.resume()
    assert client.state()["paused"] is False
    client.kill(signal.SIGKILL)
    assert client.wait() == (137, False)


def test_idle_shim_memory(shims):
    d, _ = shims.make(["sleep", "300"])
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    time.sleep(0.3)
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    print(f"idle shim RSS: {rss_kb / 1024:.1f} MiB")
    assert rss_kb < 25 * 1024
    client.stop(signal.SIGKILL, 0)


def test_stop_of_paused_container(shims):
    d, _ = shims.make(["sleep", "300"])
    pid = launch(str(d))
    client = ShimClient(str(d))
    client.start()
    client.pause()
    assert client.stop(signal.SIGTERM, 1) == 137
    _gone(d, pid)


def test_container_inherits_no_ignored_signal_and_socket_is_private(shims):
    d, cid = shims.make(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
    launch(str(d))
    assert (d / "shim.sock").stat().st_mode & 0o777 == 0o600
    client = ShimClient(str(d))
    client.start()
    assert client.wait() == (0, False)
    logged = "".join(r["log"] for r in _log(d, cid))
    assert "SigIgn:\t0000000000000000" in logged  # not the shim's SIGPIPE/SIGXFSZ
    assert "SigBlk:\t0000000000000000" in logged


@pytest.mark.parametrize("runtime", RUNTIMES[:1] + RUNTIMES[2:])
def test_container_dir_longer_than_a_socket_path(shims, tmp_path, runtime):
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    shims.tmp = deep
    d, _ = shims.make(["sh", "-c", "read x; echo got $x"], runtime=runtime, tty=True,
                      open_stdin=True)
    assert len(str(d / "shim.sock")) > 108
    launch(str(d))
    client = ShimClient(str(d))
    with client.attach(stdin=True, stdout=True) as sock:
        client.start()
        sock.sendall(b"it\n")
        out = b""
        while data := sock.recv(4096):
            out += data
    assert b"got it" in out
    assert client.wait() == (0, False)


def test_bind_rootfs_read_only(shims):
    d, cid = shims.make(["sh", "-c", "touch /x 2>/dev/null && echo rw || echo ro"])
    cfg = json.loads((d / "shim.json").read_text())
    cfg["rootfs_mounts"] = [{"type": "bind", "source": str(shims.bundle.rootfs),
                             "options": ["rbind", "ro"]}]
    (d / "shim.json").write_text(json.dumps(cfg))
    pid = launch(str(d))
    rootfs = str(d / "bundle" / "rootfs")
    assert "ro" in next(m for m in proc.mountinfo() if m.mountpoint == rootfs).options.split(",")
    client = ShimClient(str(d))
    client.start()
    assert client.wait() == (0, False)
    assert [r["log"] for r in _log(d, cid)] == ["ro\n"]
    _gone(d, pid)


def _volatile(d: Path) -> None:
    cfg = json.loads((d / "shim.json").read_text())
    cfg["rootfs_mounts"][0]["options"].append("volatile")
    (d / "shim.json").write_text(json.dumps(cfg))


def test_volatile_rootfs_is_mounted_again_after_a_clean_end(shims):
    """--rm's volatile overlay: the monitor that unmounted it removes the
    kernel's marker, so the next monitor (a start again) can mount it."""
    d, _ = shims.make(["sh", "-c", "echo $$ >> /runs"])
    _volatile(d)
    rootfs = str(d / "bundle" / "rootfs")
    for run in (1, 2):
        pid = launch(str(d))
        mount = next(m for m in proc.mountinfo() if m.mountpoint == rootfs)
        assert "fsync=volatile" in mount.super_options.split(",")  # the kernel's name
        assert (d / "work" / "work" / "incompat" / "volatile").is_dir()
        client = ShimClient(str(d))
        client.start()
        assert client.wait() == (0, False)
        _gone(d, pid)
        assert not (d / "work" / "work" / "incompat").exists()
        assert len((d / "upper" / "runs").read_text().split()) == run


def test_volatile_rootfs_left_by_a_crash_is_refused_clearly(shims):
    """A volatile overlay that was never unmounted cleanly (the marker is
    still there: a crash of the host) is not mounted again: its files may be
    incomplete."""
    d, _ = shims.make(["true"])
    _volatile(d)
    (d / "work" / "work" / "incompat" / "volatile" / "dirty").mkdir(parents=True)
    with pytest.raises(IsoboxError, match="volatile") as info:
        launch(str(d))
    assert info.value.exit_code == 125
    assert _until(lambda: not proc.is_alive(_shim_pid(d)))
    assert not _mounted(str(d / "bundle" / "rootfs"))


def test_bad_rootfs_mount_reports_125(shims):
    d, _ = shims.make(["true"])
    cfg = json.loads((d / "shim.json").read_text())
    cfg["rootfs_mounts"][0]["options"][0] = f"lowerdir={d / 'missing'}"
    (d / "shim.json").write_text(json.dumps(cfg))
    with pytest.raises(IsoboxError) as info:
        launch(str(d))
    assert type(info.value) is IsoboxError and info.value.exit_code == 125
    assert "overlay" in str(info.value)
    assert _until(lambda: not proc.is_alive(_shim_pid(d)))
    assert not _mounted(str(d / "bundle" / "rootfs"))
    assert not (d / "shim.sock").exists()


def test_missing_shim_json_reports_125(tmp_path):
    with pytest.raises(IsoboxError, match=r"shim\.json does not exist"):
        launch(str(tmp_path))
