"""The CLI's warm shim launcher: one detached zygote per root, started by the
first launch that finds none, reused by later commands, replaced when it is
dead or stale, gone when idle, and never needed (a plain launch when it is
off or unreachable). Containers launched through it behave as before."""

from __future__ import annotations

import array
import json
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.system.cli_containers_support import (
    Isobox,
    clean_box,
    launcher_pid,
    launchers_under,
    live_processes,
    make_box,
    shim_processes,
    stop_launchers,
    until,
)

import isobox

SHIM_MAIN = Path(isobox.__file__).parent / "shim" / "main.py"


@pytest.fixture(scope="module")
def module_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isobox]:
    yield from make_box(tmp_path_factory, "cli-launcher")


@pytest.fixture
def box(module_box: Isobox) -> Iterator[Isobox]:
    yield from clean_box(module_box)


def _ready_launcher(box: Isobox) -> int:
    """Run a container so that a launcher exists; its pid once it listens."""
    box("run", "--rm", "--network", "none", "busybox", "true")
    pid = until(lambda: launcher_pid(box.root), timeout=30)
    assert pid, f"no launcher for {box.root}"
    assert (box.root / "run" / "shim-zygote.sock").exists()
    return int(pid)


def _monitor_is_forked(box: Isobox, cid: str) -> bool:
    """Whether the container's monitor came from a launcher (it keeps the
    zygote's command line) rather than from its own interpreter."""
    shims = [pid for pid, d in shim_processes(box.root).items() if d.endswith(cid)]
    assert len(shims) == 1, shims
    argv = Path(f"/proc/{shims[0]}/cmdline").read_bytes().split(b"\0")
    return b"isobox.shim.zygote" in argv


def test_later_runs_reuse_one_launcher(box: Isobox) -> None:
    pid = _ready_launcher(box)
    assert box("run", "--rm", "--network", "none", "busybox", "echo", "hi").stdout == "hi\n"
    cid = box("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    assert _monitor_is_forked(box, cid)
    assert launcher_pid(box.root) == pid
    assert list(launchers_under(box.root, "isobox.shim.zygote")) == [pid]  # one per root
    # The monitor is init's child, not the launcher's: stop and exit codes as ever.
    assert box("stop", "-t", "1", cid).returncode == 0
    assert box.fmt(cid, "{{.State.ExitCode}}") == "137"  # pid 1 ignores SIGTERM: killed


def _spare_monitors(root: Path) -> list[int]:
    """The launcher's idle forks: named isobox-shim, its command line, init's
    children, holding nothing of a container."""
    sock = str(root / "run" / "shim-zygote.sock")
    found = []
    for pid, argv, stat in live_processes("stat"):
        if (sock in argv and stat.rpartition(")")[0].endswith("(isobox-shim")
                and int(stat.rpartition(")")[2].split()[1]) == 1
                and pid not in shim_processes(root)):
            found.append(pid)
    return found


def test_a_launch_takes_the_spare_monitor_and_a_new_one_is_forked(box: Isobox) -> None:
    _ready_launcher(box)
    spares = until(lambda: _spare_monitors(box.root), timeout=10)
    assert spares and len(spares) == 1, spares
    cid = box("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    assert shim_pid_of(box, cid) == spares[0]  # the spare became the container's monitor
    after = until(lambda: _spare_monitors(box.root), timeout=10)
    assert len(after) == 1 and after != spares
    box("rm", "-f", cid)


def shim_pid_of(box: Isobox, cid: str) -> int:
    return int(box.shim_state(cid)["shim_pid"])


def test_container_through_the_launcher_behaves_as_before(box: Isobox) -> None:
    _ready_launcher(box)
    assert box("run", "--rm", "--network", "none", "busybox", "sh", "-c", "exit 3",
               check=False).returncode == 3
    box.fails("run", "--rm", "--network", "none", "busybox", "/nonexistent", code=127,
              match="nonexistent")
    box.fails("run", "--rm", "--network", "none", "busybox", "/etc", code=126,
              match="/etc")
    out = box("run", "--rm", "--network", "none", "-e", "A=1", "busybox", "sh", "-c",
              "echo $A $PATH").stdout
    assert out == "1 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"


def test_what_a_plain_launch_inherits_comes_from_the_caller(box: Isobox) -> None:
    """The launcher was started by another command: a container still gets
    this command's rlimits (no --ulimit: Docker's containers inherit them)."""
    _ready_launcher(box)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(soft, 1000) - 7

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    proc = box.popen("run", "--rm", "--network", "none", "busybox", "sh", "-c", "ulimit -n",
                     stdout=-1, stderr=-1, preexec_fn=limit)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.decode().strip() == str(want)


def test_a_killed_launcher_is_replaced(box: Isobox) -> None:
    pid = _ready_launcher(box)
    os.kill(pid, signal.SIGKILL)
    until(lambda: not Path(f"/proc/{pid}").exists() or
          Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z")
    # No launcher answers: this run launches the plain way and starts a new one.
    assert box("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
    new = until(lambda: launcher_pid(box.root), timeout=30)
    assert new and new != pid
    cid = box("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    assert _monitor_is_forked(box, cid)


def test_a_stale_launcher_is_replaced(box: Isobox) -> None:
    pid = _ready_launcher(box)
    st = SHIM_MAIN.stat()
    try:  # isobox's code "changed" since the launcher started
        os.utime(SHIM_MAIN, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert box("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
        until(lambda: not launchers_under(box.root, "isobox.shim.zygote").get(pid), timeout=10)
        assert pid not in launchers_under(box.root, "isobox.shim.zygote")
        new = until(lambda: launcher_pid(box.root), timeout=30)
        assert new and new != pid
    finally:
        os.utime(SHIM_MAIN, ns=(st.st_atime_ns, st.st_mtime_ns))
    log = (box.root / "run" / "shim-zygote.log").read_text()
    assert f"{SHIM_MAIN} changed" in log


def test_a_stale_launcher_is_replaced_while_its_monitors_run(box: Isobox) -> None:
    """A forked monitor holds none of its launcher's files (the lock above
    all: a monitor holding it would keep every later launcher out)."""
    pid = _ready_launcher(box)
    cid = box("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    assert _monitor_is_forked(box, cid)
    shim = next(p for p, d in shim_processes(box.root).items() if d.endswith(cid))
    fds = {os.readlink(f"/proc/{shim}/fd/{fd}") for fd in os.listdir(f"/proc/{shim}/fd")}
    assert not [f for f in fds if "shim-zygote" in f], fds
    st = SHIM_MAIN.stat()
    try:
        os.utime(SHIM_MAIN, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert box("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
        new = until(lambda: (launcher_pid(box.root) or pid) != pid and launcher_pid(box.root),
                    timeout=30)
        assert new and new != pid
        other = box("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
        assert _monitor_is_forked(box, other)
    finally:
        os.utime(SHIM_MAIN, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert box("stop", "-t", "1", cid, other).returncode == 0


def test_a_launcher_of_another_installation_is_not_used(box: Isobox) -> None:
    pid = _ready_launcher(box)
    r, w = os.pipe()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(str(box.root / "run" / "shim-zygote.sock"))
        sock.sendmsg([b"/nonexistent/container\0src=/elsewhere/isobox\0python=/usr:/x"],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w, w]))])
        assert sock.recv(16) == b"stale"
    finally:
        sock.close()
        os.close(r)
        os.close(w)
    until(lambda: pid not in launchers_under(box.root, "isobox.shim.zygote"), timeout=10)
    assert pid not in launchers_under(box.root, "isobox.shim.zygote")
    assert not (box.root / "run" / "shim-zygote.sock").exists()
    assert box("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"


def _with_settings(box: Isobox, tmp_path: Path, settings: dict[str, object]) -> Isobox:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(settings))
    other = Isobox(box.root, Path(box.env["HOME"]))
    other.env = {**box.env, "ISOBOX_DAEMON_CONFIG": str(path)}
    return other


def test_turned_off_every_monitor_is_a_new_interpreter(box: Isobox, tmp_path: Path) -> None:
    stop_launchers(box.root)
    off = _with_settings(box, tmp_path, {"shim-launcher": {"idle-timeout": 0}})
    assert off("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
    cid = off("run", "-d", "--network", "none", "busybox", "sleep", "60").stdout.strip()
    assert not _monitor_is_forked(off, cid)
    time.sleep(1)
    assert not launchers_under(box.root, "isobox.shim.zygote")


def test_an_idle_launcher_exits(box: Isobox, tmp_path: Path) -> None:
    stop_launchers(box.root)
    quick = _with_settings(box, tmp_path, {"shim-launcher": {"idle-timeout": 1}})
    quick("run", "--rm", "--network", "none", "busybox", "true")
    started = until(lambda: launchers_under(box.root, "isobox.shim.zygote"), timeout=30)
    assert started
    until(lambda: not launchers_under(box.root, "isobox.shim.zygote"), timeout=15)
    assert not launchers_under(box.root, "isobox.shim.zygote")
    assert not (box.root / "run" / "shim-zygote.sock").exists()
    assert not (box.root / "run" / "shim-zygote.pid").exists()


def test_bad_launcher_settings_are_refused(box: Isobox, tmp_path: Path) -> None:
    bad = _with_settings(box, tmp_path, {"shim-launcher": {"idle": 5}})
    bad.fails("run", "--rm", "--network", "none", "busybox", "true", code=125,
              match="shim-launcher")
