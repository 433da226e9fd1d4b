"""isoboxd's attach and exec streams beyond the plain case: ``logs=1``
replays the container's log before (or, with ``stream=0``, instead of) its
live output; detach keys (``detachKeys``, exec's ``DetachKeys``, ctrl-p
ctrl-q by default) cut a client off a tty and leave the container or the
exec running. Driven by docker-py's low-level client, raw sockets and the
docker CLI on a terminal."""

from __future__ import annotations

import os
import pty
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemon_support import Daemon, needs_docker, running_daemon

pytestmark = needs_docker


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("isoboxd-attach")) as d:
        yield d


@pytest.fixture
def api(daemon: Daemon) -> Iterator[Any]:
    import docker

    client = docker.APIClient(base_url=f"unix://{daemon.sock}", timeout=30)
    try:
        yield client
    finally:
        client.close()
        daemon.remove_all()


def _create(api: Any, cmd: list[str], **kw: Any) -> str:
    box = api.create_container("busybox", cmd, host_config=api.create_host_config(
        network_mode="none"), **kw)
    return str(box["Id"])


def _until(check: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _read_until(sock: socket.socket, want: bytes, seconds: float = 10) -> bytes:
    """What the socket sends until ``want`` shows up (or EOF, or time out)."""
    out = b""
    sock.settimeout(seconds)
    while want not in out:
        data = sock.recv(4096)
        if not data:
            break
        out += data
    return out


def _closed_by_peer(sock: socket.socket, seconds: float = 5) -> bool:
    """True when the daemon ends the connection (EOF) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    return True


def _raw(attached: Any) -> socket.socket:
    raw: socket.socket = attached._sock
    return raw


# -- logs=1 -----------------------------------------------------------------------------

def test_attach_replays_the_log(api: Any) -> None:
    cid = _create(api, ["sh", "-c", "echo one; echo two >&2; sleep 1.5; echo three"])
    api.start(cid)
    assert _until(lambda: api.logs(cid) == b"one\ntwo\n")
    # stream=0: the log so far, and the answer ends at once
    started = time.monotonic()
    assert api.attach(cid, stdout=True, stderr=True, logs=True) == b"one\ntwo\n"
    assert api.attach(cid, stdout=True, stderr=False, logs=True) == b"one\n"
    assert api.attach(cid, stdout=False, stderr=True, logs=True) == b"two\n"
    assert time.monotonic() - started < 1.4  # not held until the container ends
    # logs=1 stream=1: the log, then live output to the end (multiplexed frames)
    frames = list(api.attach(cid, stdout=True, stderr=True, logs=True, stream=True,
                             demux=True))
    assert b"".join(f[0] or b"" for f in frames) == b"one\nthree\n"
    assert b"".join(f[1] or b"" for f in frames) == b"two\n"
    assert api.wait(cid, timeout=30)["StatusCode"] == 0
    # a stopped container: the whole log (plain attach refuses it)
    assert b"".join(api.attach(cid, stdout=True, stderr=True, logs=True, stream=True)) \
        == b"one\ntwo\nthree\n"


def test_attach_logs_with_a_tty_are_raw(api: Any) -> None:
    cid = _create(api, ["sh", "-c", "echo tty-out; sleep 30"], tty=True)
    api.start(cid)
    assert _until(lambda: b"tty-out" in api.logs(cid))
    assert api.attach(cid, stdout=True, stderr=True, logs=True) == b"tty-out\r\n"


# -- detach keys ------------------------------------------------------------------------

def _tty_shell(api: Any) -> str:
    cid = _create(api, ["sh"], tty=True, stdin_open=True)
    api.start(cid)
    return cid


def _attach(api: Any, cid: str, **params: Any) -> socket.socket:
    return _raw(api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1,
                                               "stream": 1, **params}))


def test_detach_keys_leave_the_container_running(api: Any) -> None:
    cid = _tty_shell(api)
    sock = _attach(api, cid, detachKeys="q,q")
    # A lone q followed by something else is passed on, in order.
    sock.sendall(b"echo q")
    time.sleep(0.2)
    sock.sendall(b"x-$((6*7))\n")
    assert b"qx-42" in _read_until(sock, b"qx-42")
    sock.sendall(b"q")
    time.sleep(0.2)
    assert not _closed_by_peer(sock, 0.5)  # half the sequence: still attached
    sock.sendall(b"q")
    assert _closed_by_peer(sock)
    sock.close()
    assert api.inspect_container(cid)["State"]["Running"] is True
    # Attached again, the same shell answers.
    again = _attach(api, cid)
    again.sendall(b"echo back-$((7*6))\n")
    assert b"back-42" in _read_until(again, b"back-42")
    # The default sequence: ctrl-p ctrl-q.
    again.sendall(b"\x10")
    time.sleep(0.2)
    again.sendall(b"\x11")
    assert _closed_by_peer(again)
    again.close()
    assert api.inspect_container(cid)["State"]["Running"] is True
    events = api.events(since=int(time.time()) - 60, until=int(time.time()) + 1,
                        filters={"container": cid, "event": "detach"}, decode=True)
    assert len(list(events)) == 2


def test_detach_keys_need_a_tty(api: Any) -> None:
    cid = _create(api, ["cat"], stdin_open=True)
    api.start(cid)
    sock = _attach(api, cid)
    sock.sendall(b"a\x10\x11b\n")
    out = _read_until(sock, b"b\n")
    assert out == struct.pack(">BxxxI", 1, 5) + b"a\x10\x11b\n"
    sock.close()


def test_bad_detach_keys(api: Any, daemon: Daemon) -> None:
    cid = _tty_shell(api)
    with daemon.http() as http:
        r = http.post(f"/containers/{cid}/attach", params={"stream": "1", "stdin": "1",
                                                           "detachKeys": "ctrl-P"})
        assert r.status_code == 400
        assert r.json() == {"message": "Invalid detach keys (ctrl-P) provided"}
        r = http.post(f"/containers/{cid}/exec", json={"Cmd": ["sh"], "DetachKeys": "nope"})
        assert r.status_code == 500  # a plain error in Docker's daemon too
        assert r.json() == {"message": "Invalid escape keys (nope) provided"}


def test_exec_detach_keys(api: Any) -> None:
    cid = _tty_shell(api)
    exec_id = api.exec_create(cid, ["sh"], stdin=True, tty=True, detach_keys="ctrl-a")["Id"]
    sock = _raw(api.exec_start(exec_id, tty=True, socket=True))
    sock.sendall(b"echo ex-$((2+2))\n")
    assert b"ex-4" in _read_until(sock, b"ex-4")
    sock.sendall(b"\x01")
    assert _closed_by_peer(sock)
    sock.close()
    time.sleep(0.3)
    assert api.exec_inspect(exec_id)["Running"] is True  # the exec'd shell is still there
    # Without DetachKeys, ctrl-p ctrl-q.
    plain = api.exec_create(cid, ["sh"], stdin=True, tty=True)["Id"]
    sock = _raw(api.exec_start(plain, tty=True, socket=True))
    sock.sendall(b"\x10")
    time.sleep(0.2)
    sock.sendall(b"\x11")
    assert _closed_by_peer(sock)
    sock.close()
    assert api.exec_inspect(plain)["Running"] is True


def test_cli_attach_detach_keys(daemon: Daemon, api: Any) -> None:
    """``docker attach --detach-keys`` on a terminal: the CLI leaves, the container stays."""
    import shutil

    cid = _tty_shell(api)
    pid, fd = pty.fork()
    if pid == 0:  # the docker CLI on a terminal
        os.execve(shutil.which("docker") or "docker",
                  ["docker", "attach", "--detach-keys", "ctrl-x,x", cid], daemon.env)
    out = b""

    def read_for(seconds: float, until: bytes = b"") -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until in out):
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    return

    try:
        time.sleep(1.0)
        os.write(fd, b"echo cli-$((6*7))\r")
        read_for(10, b"cli-42")
        os.write(fd, b"\x18")
        time.sleep(0.2)
        os.write(fd, b"x")
        read_for(5)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert b"cli-42" in out, out
    # The CLI's own words (and its status 1, as against dockerd) on leaving.
    assert b"read escape sequence" in out and os.waitstatus_to_exitcode(status) == 1, out
    assert api.inspect_container(cid)["State"]["Running"] is True
