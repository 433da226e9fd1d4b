"""The container's monitor (shim) as a Docker user meets it, with the real
``isobox`` binary: the CLI exits and comes back, json-file logs, exit codes,
OOM kills and finish times, restart policies, an interactive shell in a real
terminal (a pty), detach with ctrl-p ctrl-q and attach again, a monitor
killed with SIGKILL, and a CLI killed with SIGKILL in the middle of ``run -d``.

Same fixtures as ``test_cli_containers.py``: a private root per module,
every test's containers removed with ``rm -f`` and checked gone after it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from cli_containers_support import (
    Isobox,
    Terminal,
    assert_gone,
    cgroups_of,
    clean_box,
    kill_pid,
    make_box,
    mounts_under,
    shim_processes,
    until,
)

from isobox.linux import proc

pytestmark = pytest.mark.skipif(shutil.which("busybox") is None,
                                reason="needs the host's busybox (apt-get install "
                                       "busybox-static)")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")
LOOP = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"


@pytest.fixture(scope="module")
def module_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    yield from make_box(tmp_path_factory, "cli-monitor")


@pytest.fixture
def box(module_box: Isobox) -> Iterator[Isobox]:
    yield from clean_box(module_box)


def shim_pid(box: Isobox, cid: str) -> int:
    return int(box.shim_state(cid)["shim_pid"])


# ---------------------------------------------------------------- the monitor's duties


def test_cli_exits_and_comes_back(box: Isobox) -> None:
    cid = box("run", "-d", "--name", "bg", "busybox", "sh", "-c", LOOP).stdout.strip()
    state = box.shim_state(cid)
    assert state["status"] == "running" and proc.is_alive(state["shim_pid"])
    # the monitor is nobody's child but init's (the CLI is long gone), and the
    # container's init is the monitor's child
    assert int(proc.stat_fields(state["shim_pid"])[1]) == 1
    assert int(proc.stat_fields(state["pid"])[1]) == state["shim_pid"]
    assert until(lambda: "tick-2" in box("logs", "bg").stdout, 15)
    log = box.container_dir(cid) / f"{cid}-json.log"
    first = json.loads(log.read_text().splitlines()[0])
    assert first["log"] == "tick-0\n" and first["stream"] == "stdout"
    assert RFC3339.fullmatch(first["time"])
    follow = box.popen("logs", "-f", "--tail", "1", "bg", stdout=subprocess.PIPE)
    assert follow.stdout is not None
    assert follow.stdout.readline().startswith(b"tick-")
    assert follow.stdout.readline().startswith(b"tick-")  # a new line, as it comes
    box("stop", "-t", "1", "bg")
    assert follow.wait(20) == 0  # -f ends with the container
    info = box.inspect("bg")["State"]
    assert info["Status"] == "exited" and info["ExitCode"] == 137
    assert RFC3339.fullmatch(info["FinishedAt"]) and info["FinishedAt"] > info["StartedAt"]
    assert until(lambda: not proc.is_alive(state["shim_pid"]), 10)  # done for good
    assert not mounts_under(box.root)  # the monitor unmounted the rootfs


def test_exit_code_stderr_and_finish_time(box: Isobox) -> None:
    result = box("run", "--name", "ex", "busybox", "sh", "-c",
                 "echo out; echo err >&2; exit 42", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (42, "out\n", "err\n")
    state = box.inspect("ex")["State"]
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 42, False)
    assert state["FinishedAt"] >= state["StartedAt"] > "2000"
    logs = subprocess.run(box.argv("logs", "ex"), env=box.env, capture_output=True,
                          timeout=30)
    assert (logs.stdout, logs.stderr) == (b"out\n", b"err\n")
    assert box("wait", "ex").stdout == "42\n"


def test_oom_kill_is_recorded(box: Isobox) -> None:
    hog = "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"
    result = box("run", "--name", "hog", "--memory", "16m", "busybox", "sh", "-c", hog,
                 check=False, timeout=120)
    assert result.returncode == 137
    state = box.inspect("hog")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    assert state["Status"] == "exited" and RFC3339.fullmatch(state["FinishedAt"])


def test_restart_policies(box: Isobox) -> None:
    box("run", "-d", "--name", "onfail", "--restart", "on-failure:2", "busybox", "sh", "-c",
        "echo run; exit 3")
    assert until(lambda: box.fmt("onfail", "{{.State.Status}}") == "exited"
                 and box.fmt("onfail", "{{.RestartCount}}") == "2", 30)
    assert box("logs", "onfail").stdout == "run\n" * 3
    assert box.fmt("onfail", "{{.State.ExitCode}}") == "3"
    # a clean exit is not a failure
    box("run", "-d", "--name", "onfail-ok", "--restart", "on-failure", "busybox", "true")
    assert until(lambda: box.fmt("onfail-ok", "{{.State.Status}}") == "exited", 15)
    time.sleep(0.5)
    assert box.fmt("onfail-ok", "{{.RestartCount}}") == "0"
    for policy in ("always", "unless-stopped"):
        name = f"p-{policy}"
        box("run", "-d", "--name", name, "--restart", policy, "busybox", "sh", "-c",
            "echo up; sleep 0.2")
        assert until(lambda n=name: int(box.fmt(n, "{{.RestartCount}}")) >= 2, 30)
        box("stop", "-t", "1", name)  # a stop is final, whatever the policy
        count = box.fmt(name, "{{.RestartCount}}")
        time.sleep(1)
        assert box.fmt(name, "{{.State.Status}}") == "exited"
        assert box.fmt(name, "{{.RestartCount}}") == count
        box("start", name)
        assert box.fmt(name, "{{.State.Status}}") in ("running", "restarting", "exited")


def test_interactive_shell_in_a_terminal(box: Isobox) -> None:
    term = Terminal(box.argv("run", "-it", "--name", "shell", "busybox", "sh"), box.env)
    term.expect(b"# ")
    term.send(b"echo $((6*7))\r")
    assert b"\r\n42\r\n" in term.expect(b"42\r\n")
    term.expect(b"# ")
    term.send(b"tty; stty size\r")
    assert b"/dev/pts/0" in term.expect(b"/dev/pts/0")
    term.send(b"exit\r")
    assert term.wait() == 0
    assert box.fmt("shell", "{{.State.Status}} {{.State.ExitCode}} {{.Config.Tty}}") == \
        "exited 0 true"
    term = Terminal(box.argv("run", "--rm", "-it", "busybox", "sh", "-c", "exit 5"), box.env)
    assert term.wait() == 5


def test_detach_with_ctrl_p_ctrl_q_and_attach_again(box: Isobox) -> None:
    term = Terminal(box.argv("run", "-it", "--name", "det", "busybox", "sh"), box.env)
    term.expect(b"# ")
    term.send(b"echo before\r")
    term.expect(b"before\r\n")
    term.send(b"\x10\x11")  # ctrl-p ctrl-q
    assert term.wait() == 0
    assert b"read escape sequence" in term.seen
    assert box.fmt("det", "{{.State.Status}}") == "running"
    term = Terminal(box.argv("attach", "det"), box.env)
    time.sleep(0.5)  # attached
    term.send(b"echo $((6*7))\r")
    term.expect(b"42\r\n")
    term.send(b"\x10\x11")  # detach again: still running
    assert term.wait() == 0
    assert box.fmt("det", "{{.State.Status}}") == "running"
    term = Terminal(box.argv("attach", "det"), box.env)
    time.sleep(0.5)
    term.send(b"exit 3\r")
    assert term.wait() == 3
    assert box.fmt("det", "{{.State.Status}} {{.State.ExitCode}}") == "exited 3"
    assert "before" in box("logs", "det").stdout  # a tty's output is logged too


def test_attach_without_a_tty_and_start_attached(box: Isobox) -> None:
    box("run", "-d", "--name", "plain", "busybox", "sh", "-c",
        "sleep 1; echo late; echo oops >&2; exit 4")
    attached = subprocess.run(box.argv("attach", "plain"), env=box.env, capture_output=True,
                              timeout=30, stdin=subprocess.DEVNULL)
    assert (attached.returncode, attached.stdout, attached.stderr) == (4, b"late\n",
                                                                       b"oops\n")
    box.fails("attach", "plain", code=125, match="start it first")
    started = box("start", "-a", "plain", check=False)
    assert (started.returncode, started.stdout) == (4, "late\n")


# ---------------------------------------------------------------- crashes


@pytest.mark.parametrize("runtime", ["isobox-runtime", "runc"])
def test_monitor_killed_while_running(box: Isobox, runtime: str) -> None:
    if runtime == "runc" and shutil.which("runc") is None:
        pytest.skip("runc not installed")
    cid = box("run", "-d", "--runtime", runtime, "--name", "orphan", "busybox", "sh", "-c",
              LOOP).stdout.strip()
    assert until(lambda: "tick-1" in box("logs", "orphan").stdout, 15)
    init = box.shim_state(cid)["pid"]
    os.kill(shim_pid(box, cid), signal.SIGKILL)
    assert until(lambda: not shim_processes(box.root), 10)
    # the record and the logs survive; the container is still running: ps says so
    assert box.names()["orphan"].startswith("Up ")
    assert box.fmt("orphan", "{{.State.Status}} {{.State.Pid}}") == f"running {init}"
    assert "tick-0\ntick-1\n" in box("logs", "orphan").stdout
    box("stop", "-t", "1", "orphan")  # without a monitor: through the runtime
    assert box.names()["orphan"].startswith("Exited (137) ")
    assert not proc.is_alive(init)
    state = box.inspect("orphan")["State"]
    assert state["FinishedAt"] > state["StartedAt"] and "monitor" in state["Error"]
    assert not mounts_under(box.root) and not cgroups_of(cid)
    assert "tick-0" in box("logs", "orphan").stdout
    box("rm", "orphan")
    assert_gone(box, [cid])


def test_monitor_killed_then_rm_f(box: Isobox) -> None:
    cid = box("run", "-d", "--name", "orphan2", "busybox", "sleep", "600").stdout.strip()
    init = box.shim_state(cid)["pid"]
    os.kill(shim_pid(box, cid), signal.SIGKILL)
    assert until(lambda: not shim_processes(box.root), 10)
    box("rm", "-f", "orphan2")
    assert not proc.is_alive(init)
    assert_gone(box, [cid])


def test_monitor_killed_and_container_died_too(box: Isobox) -> None:
    cid = box("run", "-d", "--name", "lost", "busybox", "sh", "-c", LOOP).stdout.strip()
    assert until(lambda: "tick-0" in box("logs", "lost").stdout, 15)
    init = box.shim_state(cid)["pid"]
    os.kill(shim_pid(box, cid), signal.SIGKILL)
    kill_pid(init)
    assert until(lambda: not proc.is_alive(init), 10)
    # the truth: exited, its status unknown (255), logs kept, and cleaned up for it
    assert box.names()["lost"].startswith("Exited (255) ")
    first = box.fmt("lost", "{{.State.FinishedAt}}")
    time.sleep(1.1)
    assert box.fmt("lost", "{{.State.FinishedAt}}") == first  # recorded once
    assert box("logs", "lost").stdout.startswith("tick-0\n")
    assert not mounts_under(box.root) and not cgroups_of(cid)
    box("start", "lost")  # and it runs again, with a new monitor
    assert box.fmt("lost", "{{.State.Status}}") == "running"


def test_monitor_killed_after_the_container_exited(box: Isobox) -> None:
    cid = box("create", "--name", "done", "busybox", "sh", "-c", "echo bye; exit 6")
    cid = cid.stdout.strip()
    assert box("start", "-a", "done", check=False).returncode == 6
    assert until(lambda: not shim_processes(box.root), 10)  # finished on its own
    assert box.names()["done"].startswith("Exited (6) ")
    assert box("logs", "done").stdout == "bye\n"
    box("rm", "done")
    assert_gone(box, [cid])


def test_state_file_emptied_by_a_host_crash(box: Isobox) -> None:
    """The monitor's intermediate states are not fsynced: a crash of the host
    may leave state.json empty. With no monitor and no init behind it, the
    container reads as ended by a lost monitor, and is removed cleanly."""
    cid = box("run", "-d", "--name", "torn", "busybox", "sleep", "600").stdout.strip()
    init = box.shim_state(cid)["pid"]
    os.kill(shim_pid(box, cid), signal.SIGKILL)
    kill_pid(init)
    assert until(lambda: not proc.is_alive(init), 10)
    (box.container_dir(cid) / "state.json").write_bytes(b"")
    assert box.names()["torn"].startswith("Exited (255) ")
    assert not mounts_under(box.root) and not cgroups_of(cid)
    box("rm", "torn")
    assert_gone(box, [cid])


def test_cli_killed_during_rm_f(box: Isobox) -> None:
    """SIGKILL to ``rm -f`` of a running container at points all through it:
    the next ``ps -a`` and ``rm -f`` work, and nothing is left behind."""
    for delay in (0.0, 0.02, 0.05, 0.08, 0.12, 0.2):
        cid = box("run", "-d", "--rm", "--name", "k9rm", "busybox", "sleep",
                  "600").stdout.strip()
        cli = box.popen("rm", "-f", "k9rm", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        time.sleep(delay)
        cli.kill()
        cli.wait(30)
        assert set(box.names()) <= {"k9rm"}
        box("rm", "-f", "k9rm", check=False)
        assert box.ids() == []
        assert_gone(box, [cid])


def test_cli_killed_during_run_detached(box: Isobox) -> None:
    """SIGKILL to ``run -d`` at points all through it: the next ``ps -a`` and
    ``rm -f`` work, and nothing is left behind."""
    seen = set()
    for delay in (0.05, 0.15, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7, 1.0, 1.5):
        cli = box.popen("run", "-d", "--name", "k9", "busybox", "sleep", "600",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        cli.kill()
        cli.wait(30)
        statuses = box.names()
        assert set(statuses) <= {"k9"}
        seen.add(statuses.get("k9", "none").split(" ")[0])
        ids = box.ids()
        box("rm", "-f", "k9", check=bool(statuses))
        assert box.ids() == []
        assert_gone(box, ids)
    assert "Up" in seen  # the later kills found it started; earlier ones, less


# ---------------------------------------------------------------- the monitor lock


def _holds_lock(path: str) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_rm_waits_for_a_monitor_still_being_launched(box: Isobox) -> None:
    """A monitor holds the container's shim.lock from its first act until
    its final state; rm takes it before it deletes anything, so a monitor
    mid-launch (its CLI killed) finishes its create, which only it can undo,
    before rm goes on (and stops it once it serves)."""
    import sys

    cid = box("create", "--network", "none", "busybox", "true").stdout.strip()
    lock = box.container_dir(cid) / "shim.lock"
    lock.touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(1.5)", str(lock)],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        start = time.monotonic()
        assert box("rm", "-f", cid).returncode == 0
        assert time.monotonic() - start > 1.0  # it waited for the holder
        assert holder.wait(10) == 0
    finally:
        kill_pid(holder.pid)
        holder.wait()
    assert_gone(box, [cid])


def test_a_monitor_for_a_removed_container_gives_up(box: Isobox) -> None:
    from isobox.shim.main import lock_container

    cid = box("create", "--network", "none", "busybox", "true").stdout.strip()
    directory = str(box.container_dir(cid))
    assert not (box.container_dir(cid) / "shim.lock").exists()  # made at the launch
    with pytest.raises(Exception, match="the container was removed"):
        lock_container(directory)
    box("start", cid)
    lock = box.container_dir(cid) / "shim.lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        # Held while the monitor has the container; let go at its final state.
        assert until(lambda: not _holds_lock(str(lock)), timeout=20)
        assert box.shim_state(cid)["status"] == "exited"
        box("rm", cid)
        assert os.fstat(fd).st_nlink == 0  # rm unlinked it: a late monitor gives up
    finally:
        os.close(fd)
