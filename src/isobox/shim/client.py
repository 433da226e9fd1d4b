"""The engine's side of a shim: launch one, then talk to it.

``launch(D)`` starts the shim for container directory D and returns its pid
once the container is created. ``ShimClient(D)`` sends requests on
``D/shim.sock``; every method raises :class:`~isobox.errors.NotRunning` when
the shim is gone, and the category the shim names for its own errors.
``demux(sock)`` reads an attach stream of a container without a tty.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from isobox import errors
from isobox.errors import IsoboxError, NotRunning, Unavailable
from isobox.linux.files import read_line
from isobox.linux.lazylog import get_logger
from isobox.linux.unixsock import ShortPath
from isobox.shim.config import SHIM_LOCK, SHIM_LOG, SHIM_PID, SOCKET, STATE_FILE, error_for
from isobox.shim.frames import Demuxer

log = get_logger(__name__)

LAUNCH_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0
FINISH_GRACE = 5.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_KINDS: dict[str, type[IsoboxError]] = {
    cls.__name__: cls for cls in (
        errors.IsoboxError, errors.NotFound, errors.AlreadyExists, errors.InvalidArgument,
        errors.Conflict, errors.NotRunning, errors.Unavailable, errors.CannotInvoke,
        errors.CommandNotFound,
    )
}


def _zygote_request(container_dir: str) -> bytes:
    """DIR and what a plain launch would hand down (see isobox.shim.zygote)."""
    import resource

    from isobox.shim.zygote import identity

    umask = os.umask(0o022)
    os.umask(umask)
    src, python = identity()
    limits = ",".join(f"{n}:{':'.join(map(str, resource.getrlimit(n)))}" for n in _RLIMITS)
    fields = [f"src={src}", f"python={python}", f"umask={umask:o}", f"rlimits={limits}",
              f"path={os.environ.get('PATH') or DEFAULT_PATH}"]
    return b"\0".join([os.fsencode(container_dir), *(os.fsencode(f) for f in fields)])


_RLIMITS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)  # RLIMIT_CPU..RLIMIT_RTTIME


def _through_zygote(zygote: str, container_dir: str, ready_w: int, stderr_fd: int) -> str:
    """Ask a warm launcher (isobox.shim.zygote) to fork the shim: "ok";
    "stale" if it is out of date (it exits); "" if none answers. The caller
    then starts the shim the slow way."""
    import array

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(5)
        with ShortPath(zygote) as short:
            sock.connect(short)
        sock.sendmsg([_zygote_request(container_dir)],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                       array.array("i", [ready_w, stderr_fd]))])
        answer = sock.recv(16)
        return answer.decode() if answer in (b"ok", b"stale") else ""
    except OSError as exc:
        log.debug("zygote %s: %s", zygote, exc)
        return ""
    finally:
        sock.close()


def spawn_zygote(zygote: str, keep: float, python: str = sys.executable) -> None:
    """Start a detached warm launcher on ``zygote`` for later launches (it
    exits after ``keep`` idle seconds, never if negative) and do not wait for
    it; a second one started at once finds the first's lock and leaves."""
    base = zygote[:-5] if zygote.endswith(".sock") else zygote
    try:
        os.makedirs(os.path.dirname(zygote), mode=0o711, exist_ok=True)  # a new root's
        with open(base + ".log", "ab") as err:
            subprocess.Popen(
                [python, "-I", "-m", "isobox.shim.zygote", "--keep", str(keep), zygote],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True, cwd="/",
                env={"PATH": os.environ.get("PATH") or DEFAULT_PATH})
    except OSError as exc:
        log.debug("cannot start the shim launcher %s: %s", zygote, exc)


def launch(container_dir: str, *, python: str = sys.executable,
           timeout: float = LAUNCH_TIMEOUT, zygote: str | None = None,
           zygote_keep: float | None = None) -> int:
    """Start the shim of a prepared container directory; its pid once the
    container is created.

    Through the warm launcher ``zygote`` when it answers. ``zygote_keep``
    not None: when none answers there (or it is stale), this launch goes the
    plain way and a detached launcher is started there for the next ones
    (see :func:`spawn_zygote`).

    Raises CommandNotFound (127), CannotInvoke (126) or IsoboxError (125)
    with the shim's message when it cannot create the container; by then the
    shim has exited and left nothing behind."""
    container_dir = os.path.abspath(container_dir)
    # The monitor's lock file (see SHIM_LOCK): made here, never by the
    # monitor, which gives up when it is gone (the container was removed).
    os.close(os.open(os.path.join(container_dir, SHIM_LOCK),
                     os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    r, w = os.pipe()
    argv = [python, "-I", "-m", "isobox.shim", container_dir, "--ready-fd", str(w)]
    proc = None
    try:
        with open(os.path.join(container_dir, SHIM_LOG), "ab") as stderr:
            if zygote is None or _through_zygote(zygote, container_dir, w,
                                                 stderr.fileno()) != "ok":
                log.debug("launch %s", argv)
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                    pass_fds=(w,), start_new_session=True, cwd="/",
                    env={"PATH": os.environ.get("PATH") or DEFAULT_PATH},
                )
                if zygote is not None and zygote_keep is not None:
                    spawn_zygote(zygote, zygote_keep, python)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        line = read_line(r, timeout)
    finally:
        os.close(r)
        # The process we started forks the shim and exits at once.
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    if line is None:
        _kill_shim(container_dir)
        raise Unavailable(f"the shim did not report within {timeout:.0f}s "
                          f"(see {os.path.join(container_dir, SHIM_LOG)})")
    try:
        msg = json.loads(line) if line else None
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        raise IsoboxError(f"the shim exited without reporting: {_last_log_line(container_dir)}")
    if not msg.get("ok"):
        raise error_for(str(msg.get("error") or "container create failed"),
                        int(msg.get("exit_code") or 125))
    return int(msg["shim_pid"])


def _kill_shim(container_dir: str) -> None:
    try:
        with open(os.path.join(container_dir, SHIM_PID)) as f:
            pid = int(f.read().strip())
        os.kill(pid, 9)
    except (OSError, ValueError):
        pass


def _last_log_line(container_dir: str) -> str:
    try:
        with open(os.path.join(container_dir, SHIM_LOG), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "no shim.log"
    return lines[-1] if lines else "shim.log is empty"


def read_state(container_dir: str) -> dict[str, Any] | None:
    """state.json as the shim last wrote it (it may be dead); None if absent."""
    try:
        with open(os.path.join(container_dir, STATE_FILE), "rb") as f:
            state: dict[str, Any] = json.loads(f.read())
    except FileNotFoundError:
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ShimClient:
    def __init__(self, container_dir: str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.dir = os.path.abspath(container_dir)
        self.socket_path = os.path.join(self.dir, SOCKET)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            with ShortPath(self.socket_path) as path:
                sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise NotRunning(f"the container's shim is not running ({self.dir})") from None
        except BaseException:
            sock.close()
            raise
        return sock

    def _request(self, msg: dict[str, Any], timeout: float | None = -1.0,
                 keep: bool = False) -> tuple[dict[str, Any], socket.socket | None]:
        sock = self._connect()
        try:
            sock.settimeout(self.timeout if timeout == -1.0 else timeout)
            sock.sendall(json.dumps(msg).encode() + b"\n")
            reply = _check(json.loads(_recv_line(sock)))
        except BaseException:
            sock.close()
            raise
        if keep:
            return reply, sock
        sock.close()
        return reply, None

    def _call(self, msg: dict[str, Any], timeout: float | None = -1.0) -> dict[str, Any]:
        try:
            return self._request(msg, timeout)[0]
        except TimeoutError:
            raise
        except (ConnectionError, BrokenPipeError):
            raise NotRunning(f"the container's shim went away ({self.dir})") from None

    def start(self) -> None:
        self._call({"op": "start"})

    def attach(self, stdin: bool = False, stdout: bool = True,
               stderr: bool = True) -> socket.socket:
        """A stream socket: output from now on (frames without a tty: see
        :func:`demux`); what is sent goes to the container's stdin; its
        ``shutdown(SHUT_WR)`` closes that stdin when the container has stdin_once."""
        try:
            _, sock = self._request({"op": "attach", "stdin": stdin, "stdout": stdout,
                                     "stderr": stderr}, keep=True)
        except (ConnectionError, BrokenPipeError):
            raise NotRunning(f"the container's shim went away ({self.dir})") from None
        assert sock is not None
        sock.settimeout(None)
        return sock

    def resize(self, height: int, width: int) -> None:
        self._call({"op": "resize", "height": height, "width": width})

    def kill(self, sig: int, all: bool = False) -> None:
        self._call({"op": "kill", "signal": int(sig), "all": all})

    def stop(self, sig: int, timeout: int) -> int:
        """Stop (no restart after it); the exit code once the process is gone."""
        wait_for = None if timeout < 0 else timeout + self.timeout
        reply = self._call({"op": "stop", "signal": int(sig), "timeout": timeout}, wait_for)
        return int(reply["exit_code"])

    def wait(self, timeout: float | None = None) -> tuple[int, bool]:
        """(exit code, oom_killed) once the container has exited for good.

        A shim that already finished (or is finishing) leaves its final state
        in state.json: that is the answer. Raises TimeoutError after timeout seconds, NotRunning if the
        shim died before the container exited for good."""
        try:
            reply = self._call({"op": "wait"}, timeout)
        except NotRunning:
            state = self._final_state()
            if state is None:
                raise
            return int(state.get("exit_code", 0)), bool(state.get("oom_killed"))
        return int(reply["exit_code"]), bool(reply.get("oom_killed"))

    def _final_state(self, grace: float = FINISH_GRACE) -> dict[str, Any] | None:
        """The final state.json of a shim that closed its socket; None if it died
        before writing one. A finishing shim removes the socket just before it
        writes the final state: give it that moment."""
        deadline = time.monotonic() + grace
        while True:
            state = read_state(self.dir)
            if state is not None and state.get("status") == "exited":
                return state
            shim = int(state.get("shim_pid") or 0) if state else 0
            if not shim or not _alive(shim) or time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    def pause(self) -> None:
        self._call({"op": "pause"})

    def resume(self) -> None:
        self._call({"op": "resume"})

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._call({"op": "state"})["state"]
        return state


def _recv_line(sock: socket.socket) -> bytes:
    """One reply line, and not a byte more (an attach stream follows it)."""
    data = b""
    while True:
        chunk = sock.recv(4096, socket.MSG_PEEK)
        if not chunk:
            raise NotRunning("the shim closed the connection without a reply")
        end = chunk.find(b"\n")
        if end >= 0:
            data += sock.recv(end + 1)
            return data[:-1]
        data += sock.recv(len(chunk))


def _check(reply: Any) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise IsoboxError(f"unexpected reply from the shim: {reply!r}")
    if reply.get("ok"):
        return reply
    cls = _KINDS.get(str(reply.get("kind")), IsoboxError)
    raise cls(str(reply.get("error") or "the shim refused the request"))


def demux(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) frames of a multiplexed attach stream until it ends;
    stream 1 is stdout, 2 stderr."""
    demuxer = Demuxer()
    while True:
        data = sock.recv(65536)
        if not data:
            return
        yield from demuxer.feed(data)
