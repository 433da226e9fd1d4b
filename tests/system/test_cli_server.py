"""The CLI's command server (isobox.engine.resident): one detached warm
process per root that runs each command in a fork of itself. A command run
there must be indistinguishable from one run in its own interpreter
(output, exit code, stdin, working directory, environment, umask,
signals), a caller with other privileges or namespaces must not be served,
and the server must go when stale, idle or turned off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.system.cli_containers_support import (
    Isobox,
    clean_box,
    launchers_under,
    make_box,
    stop_launchers,
    until,
)

SERVER = "isobox.cli.resident"


@pytest.fixture(scope="module")
def module_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    yield from make_box(tmp_path_factory, "cli-server")


@pytest.fixture
def box(module_box: Isobox) -> Iterator[Isobox]:
    yield from clean_box(module_box)


def _server(box: Isobox) -> int:
    """The root's command server's pid, started by a command if need be."""
    box("ps")
    pid = until(lambda: _listening(box), timeout=30)
    assert pid, "no command server started"
    return int(pid)


def _listening(box: Isobox) -> int | None:
    try:
        pid = int((box.root / "run" / "cli-server.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if pid in launchers_under(box.root, SERVER) else None


def _forks(pid: int, *, idle: bool) -> list[int]:
    """The server's forks: its workers that run a command (they took on a
    caller's working directory), or (``idle``) its spare, waiting in /."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid and (
                        os.readlink(f"/proc/{entry}/cwd") == "/") == idle:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _children(pid: int) -> list[int]:
    return _forks(pid, idle=False)


def _with_settings(box: Isobox, path: Path, settings: dict[str, object]) -> Isobox:
    path.write_text(json.dumps(settings))
    other = Isobox(box.root, Path(box.env["HOME"]))
    other.env = {**box.env, "ISOBOX_DAEMON_CONFIG": str(path)}
    return other


def _spares(pid: int) -> list[int]:
    return _forks(pid, idle=True)


def test_a_command_runs_in_the_spare_fork_of_the_server(box: Isobox) -> None:
    server = _server(box)
    spares = until(lambda: _spares(server), timeout=10)
    assert len(spares) == 1, spares  # forked while idle, for the next command
    proc = box.popen("run", "--rm", "--network", "none", "busybox", "sleep", "2",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        workers = until(lambda: _children(server), timeout=10)
        assert workers == spares, "the command did not run in the server's spare"
        assert Path(f"/proc/{workers[0]}/comm").read_text().strip() == "isobox"
    finally:
        assert proc.wait(30) == 0
    after = until(lambda: _spares(server), timeout=10)
    assert len(after) == 1 and after != spares  # a new one, once idle again


@pytest.mark.parametrize("served", [True, False], ids=["served", "in-process"])
def test_the_command_sees_the_callers_stdio_cwd_env_and_umask(
        box: Isobox, tmp_path: Path, served: bool) -> None:
    _server(box)
    env = {**box.env, "FROM_CALLER": "x y"}
    if not served:
        env["ISOBOX_CLI_SERVER"] = "0"
    (tmp_path / "relative.env").write_text("A=1\n")
    result = subprocess.run(
        box.argv("run", "--rm", "-i", "--network", "none", "--env-file", "relative.env",
                 "-e", "FROM_CALLER", "busybox", "sh", "-c",
                 'cat; echo "$A $FROM_CALLER"; echo err >&2; exit 3'),
        input=b"from stdin\n", capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        3, b"from stdin\n1 x y\n", b"err\n")
    saved = subprocess.run(box.argv("save", "-o", "out.tar", "busybox"), env=env,
                           cwd=tmp_path, preexec_fn=lambda: os.umask(0o077), timeout=60)
    assert saved.returncode == 0
    assert (tmp_path / "out.tar").stat().st_mode & 0o777 == 0o600


def test_errors_and_exit_codes_are_the_commands(box: Isobox) -> None:
    _server(box)
    missing = box("run", "--rm", "--network", "none", "busybox", "no-such-cmd", check=False)
    assert missing.returncode == 127
    assert "executable file not found" in missing.stderr
    usage = box("no-such-verb", check=False)
    assert usage.returncode == 2 and "No such command" in usage.stderr
    assert box("ps", "--format", "{{.Names}}").stdout == ""


def test_a_signal_to_the_caller_reaches_the_command(box: Isobox) -> None:
    server = _server(box)
    proc = box.popen("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                     'trap "exit 3" TERM; sleep 30 & wait',
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert until(lambda: _children(server), timeout=10)
        assert until(lambda: box("ps", "-q").stdout.strip(), timeout=20)
        time.sleep(0.5)  # the trap is set once the shell runs
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 3  # docker run's sig-proxy: the container's own exit
        assert time.monotonic() - start < 10
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_caller_takes_its_command_along(box: Isobox) -> None:
    server = _server(box)
    proc = box.popen("run", "--network", "none", "busybox", "sleep", "60",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = until(lambda: _children(server), timeout=10)
    assert workers
    proc.kill()
    proc.wait()
    assert until(lambda: not set(workers) & set(_children(server)), timeout=10)


def test_a_command_killed_by_a_signal_kills_its_caller_alike(box: Isobox) -> None:
    server = _server(box)
    proc = box.popen("run", "--network", "none", "busybox", "sleep", "60",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers = until(lambda: _children(server), timeout=10)
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


@pytest.mark.parametrize("prefix", [
    ["setpriv", "--bounding-set", "-net_raw", "--"],  # fewer capabilities
    ["unshare", "--uts", "--"],  # another namespace
    ["setpriv", "--no-new-privs", "--"],
], ids=["capabilities", "namespace", "no-new-privs"])
def test_a_caller_with_other_privileges_runs_its_command_itself(
        box: Isobox, prefix: list[str]) -> None:
    server = _server(box)
    proc = subprocess.Popen(
        [*prefix, *box.argv("run", "--rm", "--network", "none", "busybox", "sleep", "1")],
        env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            assert not _children(server), "the server ran a command for another caller"
            time.sleep(0.05)
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_a_stale_server_is_replaced(box: Isobox, tmp_path: Path) -> None:
    stop_launchers(box.root)
    settings = tmp_path / "daemon.json"
    mine = _with_settings(box, settings, {})
    mine("ps")
    first = until(lambda: _listening(box), timeout=30)
    assert first
    settings.write_text(json.dumps({"cli-server": {"idle-timeout": 300}}))  # its stamp changes
    assert mine("ps").returncode == 0  # runs in process; starts a new server
    second = until(lambda: (_listening(box) or first) != first and _listening(box), timeout=30)
    assert second and second != first
    assert until(lambda: first not in launchers_under(box.root, SERVER), timeout=15)


def test_an_idle_server_exits_and_none_starts_when_off(box: Isobox, tmp_path: Path) -> None:
    stop_launchers(box.root)
    quick = _with_settings(box, tmp_path / "quick.json", {"cli-server": {"idle-timeout": 1}})
    quick("ps")
    assert until(lambda: launchers_under(box.root, SERVER), timeout=30)
    assert until(lambda: not launchers_under(box.root, SERVER), timeout=20)
    assert not (box.root / "run" / "cli-server.sock").exists()
    assert not (box.root / "run" / "cli-server.pid").exists()
    off = _with_settings(box, tmp_path / "off.json", {"cli-server": {"idle-timeout": 0}})
    off("ps")
    off("images")
    time.sleep(1)
    assert not launchers_under(box.root, SERVER)


def test_a_bad_setting_is_one_line(box: Isobox, tmp_path: Path) -> None:
    bad = _with_settings(box, tmp_path / "bad.json", {"cli-server": {"idle-timeout": "x"}})
    result = bad("ps", check=False)
    assert result.returncode == 125
    assert result.stderr.strip().splitlines() == [
        f'Error: {tmp_path / "bad.json"}: "cli-server": want {{"idle-timeout": SECONDS}}']


def test_many_commands_at_once_and_a_silent_caller(box: Isobox) -> None:
    import socket

    server = _server(box)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    silent.connect(str(box.root / "run" / "cli-server.sock"))  # and never sends
    try:
        expected = box("images", "-q").stdout
        assert expected.count("\n") == 1
        procs = [box.popen("images", "-q", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE) for _ in range(40)]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 40, results[0]
        # Each ran once: a worker's own end message may beat the server's
        # "pid" to its caller, which must not then run the command again.
        assert {out.decode() for out, _ in results} == {expected}
        for _ in range(20):
            assert box("images", "-q").stdout == expected
        assert _listening(box) == server  # neither the crowd nor the silent one stopped it
    finally:
        silent.close()


def _private_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1])
    raise AssertionError(f"no Private_Dirty for {pid}")


def test_a_spare_copies_ahead_what_the_last_command_wrote_to(box: Isobox) -> None:
    from isobox.engine.resident import MAX_PREFAULT

    stop_launchers(box.root)
    server = _server(box)  # a new server: its first spare has learned nothing
    first = until(lambda: _spares(server), timeout=10)
    assert len(first) == 1
    before = _private_kib(first[0])
    box("run", "--rm", "--network", "none", "busybox", "true")
    after = until(lambda: [p for p in _spares(server) if p not in first], timeout=10)
    assert len(after) == 1
    grown = until(lambda: _private_kib(after[0]) - before > 2048 and _private_kib(after[0]),
                  timeout=10)
    # A run writes to ~8 MiB of the server's pages; the spare copies them
    # while it waits, and never more than the cap.
    assert grown, f"the spare copied nothing ahead ({_private_kib(after[0])} KiB private)"
    assert grown - before <= MAX_PREFAULT // 1024 + 2048
