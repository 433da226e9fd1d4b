"""The monitor's lifecycle against a fake runtime (no root, no container): the
"container" is ``sh -c`` in a forked child that waits for start; the real
loop, server and client drive it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isobox.errors import Conflict, NotRunning
from isobox.linux.loop import Loop
from isobox.shim.client import ShimClient, demux
from isobox.shim.config import SOCKET, STATE_FILE, ShimConfig
from isobox.shim.logs import JsonFileWriter
from isobox.shim.monitor import Monitor
from isobox.shim.rootfs import Rootfs
from isobox.shim.runtimes import Created, reset_signals
from isobox.shim.server import Server
from isobox.shim.state import ShimState


class FakeRuntime:
    """Each create forks ``sh -c <next command>`` (the last one repeats) in a
    process group of its own, held until start."""

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands
        self.calls: list[str] = []
        self.pid = 0
        self._go = -1

    def create(self, stdio: tuple[int, int, int], tty: bool) -> Created:
        runs = self.calls.count("create")
        self.calls.append("create")
        command = self.commands[min(runs, len(self.commands) - 1)]
        r, w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                reset_signals()
                os.setsid()  # a process group: kill and delete reach all of it
                os.close(w)
                os.close(ready_r)
                os.close(ready_w)  # the group exists: create may return
                for n, fd in enumerate(stdio):
                    os.dup2(fd, n)
                os.read(r, 1)
                os.execv("/bin/sh", ["sh", "-c", command])
            finally:
                os._exit(127)
        os.close(r)
        os.close(ready_w)
        os.read(ready_r, 1)  # EOF once the child is its group's leader (a kill finds it)
        os.close(ready_r)
        self._go, self.pid = w, pid
        return Created(pid, None)

    def start(self) -> None:
        self.calls.append("start")
        os.write(self._go, b"g")
        os.close(self._go)
        self._go = -1

    def kill(self, sig: int, all_processes: bool = False) -> None:
        self.calls.append(f"kill {sig}")
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            raise NotRunning("container is not running") from None

    def delete(self, force: bool = False) -> None:
        self.calls.append("delete")
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        try:
            os.killpg(self.pid, signal.SIGKILL)  # what outlived the init, as runtimes do
        except ProcessLookupError:
            pass

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path

    def run(self, commands: list[str], actions: Callable[[ShimClient], Any],
            **config: Any) -> tuple[Monitor, FakeRuntime, Any]:
        cfg = ShimConfig(str(self.dir), {"id": "c1", "runtime_root": str(self.dir / "rt"),
                                         **config})
        runtime = FakeRuntime(commands)
        loop = Loop()
        logs = JsonFileWriter(cfg.log_path)
        monitor = Monitor(cfg, runtime, loop, logs, ShimState(cfg.path(STATE_FILE), os.getpid()),
                          Rootfs(cfg.rootfs, []))
        loop.handle_signals((signal.SIGCHLD,), monitor.on_signal)
        server = Server(cfg.path(SOCKET), loop, monitor)
        monitor.server = server
        result: dict[str, Any] = {}

        def client() -> None:
            try:
                result["value"] = actions(ShimClient(str(self.dir), timeout=10))
            except BaseException as exc:
                result["error"] = exc

        try:
            monitor.create()
            thread = threading.Thread(target=client)
            thread.start()
            loop.call_later(20, loop.stop)  # a hung test fails instead of hanging
            loop.run()
            server.flush_all()
            thread.join(10)
        finally:
            loop.close()
            logs.close()
            server.flush_all()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if "error" in result:
            raise result["error"]
        return monitor, runtime, result.get("value")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield Harness(tmp_path)


def test_start_and_wait(harness):
    monitor, runtime, got = harness.run(
        ["echo hi; exit 4"], lambda c: (c.start(), c.wait())[1])
    assert got == (4, False)
    assert monitor.state.status == "exited" and monitor.state.exit_code == 4
    assert runtime.calls == ["create", "start", "delete"]
    assert not (harness.dir / SOCKET).exists()


def test_on_failure_restarts_with_backoff(harness):
    started = time.monotonic()
    monitor, runtime, got = harness.run(
        ["exit 1"], lambda c: (c.start(), c.wait())[1],
        restart={"name": "on-failure", "max_retries": 2})
    assert got == (1, False)
    assert monitor.state.restart_count == 2
    assert runtime.calls.count("create") == 3
    assert time.monotonic() - started >= 0.3  # 100 ms, then 200 ms


def test_on_failure_stops_at_success(harness):
    monitor, _runtime, got = harness.run(
        ["exit 1", "exit 0"], lambda c: (c.start(), c.wait())[1],
        restart={"name": "on-failure"})
    assert got == (0, False)
    assert monitor.state.restart_count == 1


def test_always_then_stop(harness):
    def actions(c: ShimClient) -> int:
        c.start()
        deadline = time.monotonic() + 10
        while c.state()["restart_count"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        while c.state()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.01)
        return c.stop(signal.SIGTERM, 5)

    monitor, runtime, got = harness.run(["sleep 0.1"], actions, restart={"name": "always"})
    assert got in (0, 143)  # stopped, or caught between runs: the last exit
    assert monitor.state.status == "exited"
    creates = runtime.calls.count("create")
    assert creates == monitor.state.restart_count + 1


def test_stop_escalates_to_sigkill(harness):
    started = time.monotonic()
    _, runtime, got = harness.run(
        ["trap '' TERM; echo ready; while :; do sleep 0.05; done"],
        lambda c: (c.start(), time.sleep(0.2), c.stop(signal.SIGTERM, 1))[2],
        restart={"name": "always"})
    assert got == 137
    assert 1.0 <= time.monotonic() - started < 8
    assert runtime.calls.count("create") == 1  # a manual stop: no restart
    assert "kill 9" in runtime.calls


def test_kill_with_stop_signal_cancels_restart(harness):
    _monitor, runtime, got = harness.run(
        ["sleep 30"], lambda c: (c.start(), c.kill(signal.SIGTERM), c.wait())[2],
        restart={"name": "always"})
    assert got == (143, False)
    assert runtime.calls.count("create") == 1


def test_other_signal_does_not_cancel_restart(harness):
    _, runtime, got = harness.run(
        ["sleep 30", "exit 5"], lambda c: (c.start(), c.kill(signal.SIGUSR1), c.wait())[2],
        restart={"name": "on-failure", "max_retries": 1})
    assert got == (5, False)
    assert runtime.calls.count("create") == 2


def test_never_started_container_is_not_restarted(harness):
    monitor, runtime, got = harness.run(
        ["true"], lambda c: (c.kill(signal.SIGUSR1), c.wait())[1], restart={"name": "always"})
    assert got == (128 + signal.SIGUSR1, False)
    assert runtime.calls.count("create") == 1
    assert monitor.state.started_at == "0001-01-01T00:00:00Z"


def test_attach_stdin_and_output(harness):
    def actions(c: ShimClient) -> list[tuple[int, bytes]]:
        with c.attach(stdin=True, stdout=True, stderr=True) as sock:
            c.start()
            sock.sendall(b"abc\n")
            sock.shutdown(1)
            return list(demux(sock))

    _, _, frames = harness.run(["cat; echo bye >&2"], actions, open_stdin=True,
                               stdin_once=True)
    assert frames == [(1, b"abc\n"), (2, b"bye\n")]


def test_errors_carry_their_category(harness):
    def actions(c: ShimClient) -> None:
        c.start()
        with pytest.raises(Conflict):
            c.start()
        with pytest.raises(Exception, match="no tty"):
            c.resize(1, 1)
        c.pause()
        with pytest.raises(Conflict):
            c.pause()
        c.resume()
        c.kill(signal.SIGKILL)
        c.wait()

    harness.run(["sleep 30"], actions)
