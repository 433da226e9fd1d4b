"""The compiled front end (client/isobox.c, built by scripts/build-client.sh
as the ``isobox`` program): it must send the command server exactly the
request the Python front end sends, find the same socket for the same
command line, relay signals and exit statuses the same way, and hand every
command no server takes to the Python front end.

A fake server (a SEQPACKET socket of the test's own) stands in for the
command server, so each test controls the answer; the real server is
exercised through this program by test_cli_server.py."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.system.cli_containers_support import until

from isobox.engine import resident
from isobox.linux import forkserver
from isobox.linux.unixsock import bind_private

BIN = Path(sys.executable).parent
CLIENT = BIN / "isobox"
PYTHON_FRONT = BIN.parent / "libexec" / "isobox" / "isobox"


def _compiled() -> bool:
    with open(CLIENT, "rb") as f:
        return f.read(4) == b"\x7fELF"


def test_the_client_is_built_where_a_compiler_is() -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the Python front end is the isobox program")
    assert _compiled(), f"{CLIENT} is not the compiled front end: run scripts/build-client.sh"
    assert PYTHON_FRONT.read_bytes().startswith(b"#!")


needs_client = pytest.mark.skipif(not _compiled(), reason="the front end was not compiled")


class FakeServer:
    """A listening socket where the command server's would be."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.path = path
        bind_private(self.listener, str(path))
        self.listener.listen(8)
        self.listener.settimeout(20)

    def take(self) -> tuple[socket.socket, resident.Request, list[int]]:
        """The next caller's connection, its request and the fds it sent."""
        conn, _ = self.listener.accept()
        conn.settimeout(20)
        msg, fds = forkserver.receive(conn, resident.MAX_REQUEST, resident.STDIO_AND_CWD)
        return conn, resident.Request(msg), fds

    def answer(self, reply: bytes) -> resident.Request:
        conn, request, fds = self.take()
        for fd in fds:
            os.close(fd)
        conn.send(reply)
        conn.close()
        return request

    def quiet(self, seconds: float) -> bool:
        """True if nobody connects within ``seconds``."""
        self.listener.settimeout(seconds)
        try:
            conn, _ = self.listener.accept()
        except TimeoutError:
            return True
        finally:
            self.listener.settimeout(20)
        conn.close()
        return False

    def close(self) -> None:
        self.listener.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def server(root: Path) -> Iterator[FakeServer]:
    fake = FakeServer(root / "run" / "cli-server.sock")
    yield fake
    fake.close()


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": "/nonexistent", **extra}


def _popen(argv: list[str], *, env: dict[str, str] | None = None,
           preexec: Callable[[], None] | None = None, cwd: Path | None = None,
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env or _env(), cwd=cwd, preexec_fn=preexec,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _settle(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


@needs_client
def test_the_request_is_the_python_front_ends(server: FakeServer, root: Path,
                                              tmp_path: Path) -> None:
    def caller_state() -> None:
        os.umask(0o027)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1000, resource.getrlimit(7)[1]))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    args = ["--root", str(root), "run", "--rm", "busybox", "echo", "é ü", ""]
    env = _env(FROM_CALLER="a=b c", ISOBOX_DAEMON_CONFIG=str(tmp_path / "d.json"))
    requests = []
    for front in (CLIENT, PYTHON_FRONT):
        proc = _popen([str(front), *args], env=env, preexec=caller_state, cwd=tmp_path)
        conn, request, fds = server.take()
        assert len(fds) == 4
        assert os.readlink(f"/proc/self/fd/{fds[3]}") == str(tmp_path)  # its working directory
        for fd in fds:
            os.close(fd)
        conn.send(b"exit 0")
        conn.close()
        assert _settle(proc) == (0, b"")
        requests.append(request)
    compiled, python = requests
    assert compiled.fields == python.fields
    assert compiled.fields["umask"] == "27"
    assert compiled.fields["settings"] == str(tmp_path / "d.json")
    assert (compiled.fields["src"], compiled.fields["python"]) == forkserver.identity()
    assert compiled.rlimits == python.rlimits
    assert (7, 1000, resource.getrlimit(7)[1]) in compiled.rlimits
    # Python ignores SIGXFSZ itself at start-up, and reports it; a worker
    # ignores it whatever the request says.
    assert [s for s in python.ignored if s != signal.SIGXFSZ] == compiled.ignored == [1]
    assert compiled.env == python.env and compiled.env[b"FROM_CALLER"] == b"a=b c"
    assert compiled.argv[1:] == python.argv[1:] == args
    assert os.path.basename(compiled.argv[0]) == os.path.basename(python.argv[0]) == "isobox"


@needs_client
@pytest.mark.parametrize(("reply", "status"), [
    (b"exit 0", 0), (b"exit 42", 42), (b"signal 15", -15), (b"signal 2", -2)])
def test_the_exit_status_is_the_workers(server: FakeServer, root: Path, reply: bytes,
                                        status: int) -> None:
    proc = _popen([str(CLIENT), "--root", str(root), "ps"])
    server.answer(reply)
    assert _settle(proc) == (status, b"")


@needs_client
def test_signals_go_to_the_worker_and_its_end_comes_back(server: FakeServer,
                                                         root: Path) -> None:
    worker = subprocess.Popen(["sleep", "60"])
    proc = _popen([str(CLIENT), "--root", str(root), "ps"])
    try:
        conn, _, fds = server.take()
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(worker.pid)
        forkserver.send(conn, b"pid", (pidfd,))
        os.close(pidfd)
        assert until(lambda: _catches(proc.pid, signal.SIGTSTP))  # it has the pidfd
        proc.send_signal(signal.SIGTSTP)  # passed on, and it stops with its worker
        assert until(lambda: _state(worker.pid) == "T" and _state(proc.pid) == "T")
        proc.send_signal(signal.SIGCONT)
        assert until(lambda: _state(worker.pid) != "T" and _state(proc.pid) != "T")
        proc.send_signal(signal.SIGTERM)
        assert worker.wait(10) == -signal.SIGTERM
        assert proc.poll() is None  # it waits for the server's word
        conn.send(b"signal 15")
        conn.close()
        assert _settle(proc) == (-signal.SIGTERM, b"")
    finally:
        worker.kill()
        worker.wait()
        proc.kill()
        proc.wait()


@needs_client
def test_a_server_gone_midway_is_exit_125(server: FakeServer, root: Path) -> None:
    proc = _popen([str(CLIENT), "--root", str(root), "ps"])
    conn, _, fds = server.take()
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(os.getpid())
    forkserver.send(conn, b"pid", (pidfd,))
    os.close(pidfd)
    conn.close()
    status, err = _settle(proc)
    assert (status, err.decode()) == (125, resident.LOST)


@needs_client
@pytest.mark.parametrize("refusal", [b"stale", b"another settings file", b""])
def test_a_refused_command_goes_to_the_python_front_end(server: FakeServer, root: Path,
                                                        refusal: bytes) -> None:
    proc = _popen([str(CLIENT), "--root", str(root), "ps", "-a"])
    server.answer(refusal)
    again = server.answer(b"exit 5")  # the Python front end asks in turn
    assert again.argv[0] == str(PYTHON_FRONT) and again.argv[1:] == ["--root", str(root),
                                                                      "ps", "-a"]
    assert _settle(proc) == (5, b"")


@needs_client
@pytest.mark.parametrize(("args", "env", "where"), [
    (["--root", "a/../b/./c//"], {}, "b/c"),
    (["--root=a"], {}, "a"),
    ([], {"ISOBOX_ROOT": "rel"}, "rel"),
    (["--root", ""], {"ISOBOX_ROOT": "env"}, "env"),
    (["--insecure-registry", "h:5000", "--root", "x"], {}, "x"),
    (["--insecure-registry=h:5000", "--root", "x", "--help"], {}, "x"),
    (["--root", "long/" + "d" * 90], {}, "long/" + "d" * 90),
], ids=["normalized", "equals", "env", "empty-option", "registry", "registry-equals", "long"])
def test_the_socket_is_found_by_the_python_front_ends_rules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str],
        where: str) -> None:
    monkeypatch.chdir(tmp_path)  # relative roots are the caller's
    expected = resident.socket_path(["isobox", *args, "ps"], env)
    assert expected == str(tmp_path / where / "run" / "cli-server.sock")
    fake = FakeServer(Path(expected))
    try:
        proc = _popen([str(CLIENT), *args, "ps"], env=_env(**env), cwd=tmp_path)
        request = fake.answer(b"exit 0")
        assert request.argv[1:] == [*args, "ps"]
        assert _settle(proc) == (0, b"")
    finally:
        fake.close()


@needs_client
def test_options_it_cannot_judge_and_off_reach_no_server(server: FakeServer,
                                                         root: Path) -> None:
    proc = _popen([str(CLIENT), "--root", str(root), "--no-such-option", "ps"])
    assert server.quiet(2)
    status, err = _settle(proc)
    assert status == 2 and b"--no-such-option" in err  # click's word, in process
    proc = _popen([str(CLIENT), "--root", str(root), "--no-such-option", "ps"],
                  env=_env(ISOBOX_CLI_SERVER="0"))
    assert server.quiet(2)
    assert _settle(proc)[0] == 2


def _catches(pid: int, sig: int) -> bool:
    """Whether ``pid`` has a handler for ``sig`` (SigCgt in its status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]
