"""The OCI runtime a shim drives: the built-in one called in process, or a
runc-compatible binary (runc, crun, runsc, isobox-runtime by path) through
runc's command line.

Both implement :class:`Runtime`. ``create`` gets the container's stdio as
three fds (the container's 0, 1, 2) and, for a tty, hands back the pty
master it received on a console socket.

The built-in runtime's ``create`` runs in a fork of the shim: that child
puts the container's stdio on its own 0/1/2, resets the signal dispositions
the shim changed (Python ignores SIGPIPE and SIGXFSZ; the shim handles
SIGCHLD and SIGTERM through a wakeup fd) so the container's init inherits
none of them, and reports the init's pid, or the error, on a pipe. The
init's parents exit, so the init is reparented to the shim (a child
subreaper). No Python start-up, and the shim's own stdio and signal state are
never touched.

Binaries are launched with ``os.posix_spawn`` (argv only, explicit env and
fds, dispositions reset, a timeout), not ``subprocess``: the shim stays
resident for every container and ``subprocess`` would cost it memory.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import json
import os
import select
import signal
import time

from isobox.errors import IsoboxError, NotFound, NotRunning, Unavailable
from isobox.linux import console
from isobox.linux.files import read_line
from isobox.linux.inherit import MONITOR_SIGNALS, reset_signals
from isobox.linux.unixsock import ShortPath
from isobox.shim.config import (
    BUILTIN_RUNTIME,
    CONSOLE_SOCKET,
    INIT_PID,
    RUNTIME_LOG,
    ShimConfig,
    error_for,
    exit_code_for,
)

CREATE_TIMEOUT = 90.0
COMMAND_TIMEOUT = 60.0
CONSOLE_TIMEOUT = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, NoReturn, Protocol

    class CreatedLike(Protocol):
        pid: int
        master: int | None

    class Runtime(Protocol):
        def create(self, stdio: tuple[int, int, int], tty: bool) -> CreatedLike: ...
        def start(self) -> None: ...
        def kill(self, sig: int, all_processes: bool = False) -> None: ...
        def delete(self, force: bool = False) -> None: ...
        def pause(self) -> None: ...
        def resume(self) -> None: ...


class Created:
    __slots__ = ("master", "pid")

    def __init__(self, pid: int, master: int | None) -> None:
        self.pid = pid
        self.master = master


def for_config(cfg: ShimConfig) -> Runtime:
    if cfg.vm is not None:
        from isobox.vm.runtime import VmRuntime

        return VmRuntime(cfg.dir, cfg.id, cfg.bundle, cfg.vm, cfg.open_stdin)
    if cfg.runtime == BUILTIN_RUNTIME:
        return InProcessRuntime(cfg)
    return BinaryRuntime(cfg)


def _translate(message: str) -> IsoboxError:
    text = message.lower()
    if "not running" in text:
        return NotRunning(message)
    if "does not exist" in text or "not found" in text:
        return NotFound(message)
    return IsoboxError(message)


class InProcessRuntime:
    """isobox's own runtime, as a library."""

    def __init__(self, cfg: ShimConfig) -> None:
        from isobox.runtime import create, lifecycle  # once, in the shim: forks reuse it
        from isobox.runtime.sync import describe

        self._create = create.create
        self._lifecycle = lifecycle
        self._describe = describe
        self.root = cfg.runtime_root
        self.id = cfg.id
        self.bundle = cfg.bundle
        self.pid_file = cfg.path(INIT_PID)

    def create(self, stdio: tuple[int, int, int], tty: bool) -> Created:
        ours = theirs = None
        if tty:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            r, w = os.pipe()
            try:
                pid = os.fork()
            except BaseException:
                os.close(r)
                os.close(w)
                raise
            if pid == 0:
                self._child(r, w, stdio, theirs)
            os.close(w)
            if theirs is not None:
                theirs.close()
                theirs = None
            msg = _child_reply(pid, r, CREATE_TIMEOUT,
                               f"runtime create did not finish within {CREATE_TIMEOUT:.0f}s")
            if not msg.get("ok"):
                message = str(msg.get("error") or "container setup failed")
                raise error_for(message, int(msg.get("exit_code") or 125))
            master = None
            if ours is not None:
                ours.settimeout(CONSOLE_TIMEOUT)
                try:
                    master = console.recv_fd(ours)[0]
                except OSError as exc:
                    self.delete(force=True)
                    raise IsoboxError(f"no pty from the runtime: {exc}") from None
            return Created(int(msg["pid"]), master)
        finally:
            for s in (ours, theirs):
                if s is not None:
                    s.close()

    def _child(self, r: int, w: int, stdio: tuple[int, int, int],
               console_sock: socket.socket | None) -> NoReturn:
        msg: dict[str, Any]
        try:
            os.close(r)
            reset_signals()
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
            container = self._create(self.root, self.id, self.bundle, pid_file=self.pid_file,
                                     console_socket=console_sock)
            msg = {"ok": True, "pid": container.record.pid}
        except BaseException as exc:
            message = " ".join(self._describe(exc).split())
            code = exit_code_for(message, getattr(exc, "exit_code", 125))
            msg = {"ok": False, "error": message, "exit_code": code}
        try:
            os.write(w, json.dumps(msg).encode() + b"\n")
        finally:
            os._exit(0)

    def _call(self, fn: Any, *args: Any, **kw: Any) -> None:
        try:
            fn(self.root, self.id, *args, **kw)
        except NotFound:
            raise NotRunning("container is not running") from None
        except IsoboxError as exc:
            if "not running" in str(exc):
                raise NotRunning(str(exc)) from None
            raise

    def start(self) -> None:
        self._call(self._lifecycle.start)

    def kill(self, sig: int, all_processes: bool = False) -> None:
        self._call(self._lifecycle.kill, sig, all_processes=all_processes)

    def delete(self, force: bool = False) -> None:
        self._lifecycle.delete(self.root, self.id, force=force)

    def pause(self) -> None:
        self._call(self._lifecycle.pause)

    def resume(self) -> None:
        self._call(self._lifecycle.resume)


class BinaryRuntime:
    """A runc-compatible binary driven through its command line."""

    def __init__(self, cfg: ShimConfig) -> None:
        self.binary = cfg.runtime
        self.root = cfg.runtime_root
        self.id = cfg.id
        self.bundle = cfg.bundle
        self.pid_file = cfg.path(INIT_PID)
        self.log = cfg.path(RUNTIME_LOG)
        self.console_path = cfg.path(CONSOLE_SOCKET)
        self.env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}

    def _argv(self, args: list[str]) -> list[str]:
        return [self.binary, "--root", self.root, "--log", self.log, "--log-format", "json",
                *args]

    def _run(self, args: list[str], stdio: tuple[int, int, int] | None = None,
             timeout: float = COMMAND_TIMEOUT) -> None:
        """Run one command; raise with the runtime's own message if it fails."""
        try:
            offset = os.stat(self.log).st_size
        except FileNotFoundError:
            offset = 0
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        r, w = os.pipe()
        try:
            fds = stdio if stdio is not None else (null, w, w)
            try:
                pid = os.posix_spawn(
                    self.binary, self._argv(args), self.env,
                    file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(fds)],
                    setsigdef=MONITOR_SIGNALS,
                )
            except OSError as exc:
                raise Unavailable(f"cannot run {self.binary}: {exc.strerror}") from None
            os.close(w)
            w = -1
            output, status = _collect(pid, r, timeout)
        finally:
            for fd in (null, r, w):
                if fd >= 0:
                    os.close(fd)
        if status is None:
            raise Unavailable(f"{self.binary} {args[0]} did not finish within {timeout:.0f}s")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            message = self._last_error(offset) or _last_line(output) or \
                f"{os.path.basename(self.binary)} {args[0]} exited with status {code}"
            raise _translate(message) if args[0] != "create" else \
                error_for(message, exit_code_for(message))

    def _last_error(self, offset: int) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(offset)
                lines = f.read().splitlines()
        except OSError:
            return ""
        for raw in reversed(lines):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                return " ".join(str(entry.get("msg", "")).split())
        return ""

    def create(self, stdio: tuple[int, int, int], tty: bool) -> Created:
        args = ["create", "--bundle", self.bundle, "--pid-file", self.pid_file]
        listener = None
        short = ShortPath(self.console_path, os.getpid())
        try:
            if tty:
                _unlink(self.console_path)
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                path = short.open()
                listener.bind(path)
                listener.listen(1)
                args += ["--console-socket", path]
            try:
                self._run([*args, self.id], stdio=stdio, timeout=CREATE_TIMEOUT)
            except IsoboxError:
                self._forget()
                raise
            try:
                with open(self.pid_file) as f:
                    pid = int(f.read().strip())
                master = _accept_pty(listener) if listener is not None else None
            except (OSError, ValueError) as exc:
                self._forget()
                raise IsoboxError(f"{self.binary} create: {exc}") from None
            return Created(pid, master)
        finally:
            if listener is not None:
                listener.close()
                _unlink(self.console_path)
            short.close()

    def _forget(self) -> None:
        try:
            self.delete(force=True)
        except IsoboxError:
            pass

    def start(self) -> None:
        self._run(["start", self.id])

    def kill(self, sig: int, all_processes: bool = False) -> None:
        self._run(["kill", *(["--all"] if all_processes else []), self.id, str(sig)])

    def delete(self, force: bool = False) -> None:
        self._run(["delete", *(["--force"] if force else []), self.id])

    def pause(self) -> None:
        self._run(["pause", self.id])

    def resume(self) -> None:
        self._run(["resume", self.id])


def _child_reply(pid: int, r: int, timeout: float, late: str) -> dict[str, Any]:
    """The JSON line a child writes on ``r`` before it exits ({} if none or
    not JSON); a child silent for ``timeout`` seconds is killed (Unavailable:
    ``late``). Closes ``r``. A child that answered is not waited for: its
    exit (a fork of the monitor tearing down, ~1 ms) is off the container's
    path, and the monitor's reaper collects it; one that did not is reaped."""
    line = None
    try:
        line = read_line(r, timeout)
        if line is None:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(r)
        if not line:
            os.waitpid(pid, 0)
    if line is None:
        raise Unavailable(late)
    try:
        reply = json.loads(line) if line else {}
    except ValueError:
        return {}
    return reply if isinstance(reply, dict) else {}


def _accept_pty(listener: socket.socket) -> int:
    listener.settimeout(CONSOLE_TIMEOUT)
    fd, _ = listener._accept()  # type: ignore[attr-defined]
    conn = socket.socket(fileno=fd)
    try:
        conn.settimeout(CONSOLE_TIMEOUT)
        return console.recv_fd(conn)[0]
    finally:
        conn.close()


def _collect(pid: int, out: int, timeout: float) -> tuple[bytes, int | None]:
    """Read the command's output while it runs; its wait status, or None on timeout
    (then it is killed)."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(out, select.POLLIN)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    exited = False
    try:
        while not exited:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return b"".join(chunks), None
            for fd, _ in poller.poll(int(left * 1000) + 1):
                if fd == pidfd:
                    exited = True
                elif not _drain(out, chunks):
                    poller.unregister(out)
        os.set_blocking(out, False)
        _drain(out, chunks, until_empty=True)
        _, status = os.waitpid(pid, 0)
        return b"".join(chunks), status
    finally:
        os.close(pidfd)


def _drain(fd: int, chunks: list[bytes], until_empty: bool = False) -> bool:
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        if len(chunks) < 64:  # keep the first 4 MiB: enough for any error message
            chunks.append(data)
        if not until_empty:
            return True


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else ""


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
