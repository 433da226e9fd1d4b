"""The built-in runtime (:mod:`isobox.runtime`) called in process, as the
shim calls it on the host.

``create`` and ``exec`` run in a fork of the agent: that child puts the
process's stdio on its own 0/1/2 (the container inherits them), resets the
signal dispositions the agent changed, closes the agent's fds, and reports
the new process's pid, or the error, on a pipe. The runtime's own
processes exit once the container process runs, so it is reparented to the
agent (PID 1, or a child subreaper), which reaps it.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import json
import os
import signal
import struct
import sys
import time

from isobox.agent import log
from isobox.agent.codes import classify, describe
from isobox.errors import CannotInvoke, CommandNotFound, InvalidArgument, IsoboxError, Unavailable
from isobox.linux.files import read_line
from isobox.linux.inherit import reset_signals
from isobox.taskapi.protocol import EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    from isobox.agent.paths import Paths

SETUP_TIMEOUT = 120.0  # generous: the guest may run under TCG, ~10x slower than the host
CONSOLE_TIMEOUT = 10.0


class Started:
    __slots__ = ("master", "pid")

    def __init__(self, pid: int, master: int | None) -> None:
        self.pid = pid
        self.master = master


def load() -> None:
    """Import the runtime now (once, before any fork: every fork reuses it)."""
    import isobox.oci.struct
    import isobox.runtime.create
    import isobox.runtime.exec
    import isobox.runtime.lifecycle  # noqa: F401


def failure(message: str, exit_code: int) -> IsoboxError:
    if exit_code == EXIT_NOT_FOUND:
        return CommandNotFound(message)
    if exit_code == EXIT_CANNOT_INVOKE:
        return CannotInvoke(message)
    return IsoboxError(message)


class BuiltinRuntime:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.root = paths.runtime
        self._execs = 0

    def create(self, container_id: str, config: dict[str, Any], stdio: tuple[int, int, int],
               tty: bool, console: tuple[int, int] | None) -> Started:
        from isobox.runtime.create import create
        from isobox.runtime.state import validate_id

        validate_id(container_id)  # before it names a directory
        bundle = self._write_bundle(container_id, config, tty, console)
        ours = theirs = None
        try:
            if tty:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            console_sock = theirs

            def create_it() -> int:
                return create(self.root, container_id, bundle,
                              console_socket=console_sock).record.pid

            _, pid = self._forked(stdio, create_it, keep=(theirs.fileno(),) if theirs else ())
            master = None
            if ours is not None:
                try:
                    master = _receive_pty(ours)
                except BaseException:
                    self.delete(container_id)
                    raise
            return Started(pid, master)
        except BaseException:
            self._remove_bundle(container_id)
            raise
        finally:
            for sock in (ours, theirs):
                if sock is not None:
                    sock.close()

    def _write_bundle(self, container_id: str, config: dict[str, Any], tty: bool,
                      console: tuple[int, int] | None) -> str:
        process = dict(config["process"])
        process["terminal"] = tty
        if tty and console is not None:
            process["consoleSize"] = {"height": console[0], "width": console[1]}
        bundle = self.paths.bundle(container_id)
        self._remove_bundle(container_id)  # a leftover of an earlier run of this id
        os.makedirs(bundle, 0o700)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump({**config, "process": process}, f)
        return bundle

    def _remove_bundle(self, container_id: str) -> None:
        bundle = self.paths.bundle(container_id)
        if os.path.lexists(bundle):
            import shutil  # rarely: only when a bundle is left to remove

            shutil.rmtree(bundle, ignore_errors=True)

    def exec(self, container_id: str, process: dict[str, Any], stdio: tuple[int, int, int],
             tty: bool, console: tuple[int, int] | None = None) -> Started:
        from isobox.oci.runtime_spec import ConsoleSize, Process
        from isobox.oci.struct import ValidationError, convert
        from isobox.runtime.exec import exec_in

        try:
            spec: Process = convert(Process, process)
        except ValidationError as exc:
            raise InvalidArgument(f"invalid process: {exc}") from None
        spec.terminal = tty
        if tty and console is not None:
            spec.console_size = ConsoleSize(height=console[0], width=console[1])
        self._execs += 1
        pid_file = os.path.join(self.paths.run, f"exec-{self._execs}.pid")
        listener = None
        name = None
        try:
            if tty:
                # exec_in connects to a console socket by name; an abstract one
                # needs no file, and the peer is checked when it connects.
                name = f"\0isobox-agent/{os.getpid()}/{self._execs}"
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(name)
                listener.listen(1)

            def exec_it() -> int:
                exec_in(self.root, container_id, spec, detach=True, pid_file=pid_file,
                        console_socket=name)
                with open(pid_file) as f:
                    return int(f.read())

            helper, pid = self._forked(stdio, exec_it)
            master = None
            if listener is not None:
                try:
                    master = _receive_pty(_accept_from(listener, helper))
                except BaseException:
                    _kill(pid)  # reaped by the agent as any orphan
                    raise
            return Started(pid, master)
        finally:
            if listener is not None:
                listener.close()
            if os.path.exists(pid_file):
                os.unlink(pid_file)

    def start(self, container_id: str) -> None:
        from isobox.runtime import lifecycle

        lifecycle.start(self.root, container_id)

    def kill(self, container_id: str, sig: int, all_processes: bool = False) -> None:
        from isobox.runtime import lifecycle

        lifecycle.kill(self.root, container_id, sig, all_processes=all_processes)

    def delete(self, container_id: str) -> None:
        """Kill what is left, remove the cgroup and the runtime's state."""
        from isobox.runtime import lifecycle

        try:
            lifecycle.delete(self.root, container_id, force=True)
        finally:
            self._remove_bundle(container_id)

    def stats(self, container_id: str) -> dict[str, Any]:
        from isobox.runtime.cgroup import manager_for
        from isobox.runtime.state import Container

        return manager_for(Container.load(self.root, container_id).record).stats()

    # -- the fork -------------------------------------------------------

    def _forked(self, stdio: tuple[int, int, int], action: Callable[[], int],
                keep: tuple[int, ...] = ()) -> tuple[int, int]:
        """Run action in a child with stdio on 0/1/2: (the child's pid, action's pid)."""
        r, w = os.pipe()
        try:
            helper = os.fork()
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        if helper == 0:
            os.close(r)
            _child(w, stdio, action, keep)
        os.close(w)
        try:
            line = read_line(r, SETUP_TIMEOUT)
            if line is None:
                os.kill(helper, signal.SIGKILL)
        finally:
            os.close(r)
            os.waitpid(helper, 0)
        if line is None:
            raise Unavailable(f"the runtime did not finish within {SETUP_TIMEOUT:.0f}s")
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {}
        if not msg.get("ok"):
            raise failure(str(msg.get("error") or "the runtime failed without a message"),
                          int(msg.get("exit_code") or 125))
        return helper, int(msg["pid"])


def _child(w: int, stdio: tuple[int, int, int], action: Callable[[], int],
           keep: tuple[int, ...]) -> NoReturn:
    msg: dict[str, object]
    try:
        reset_signals()
        # The runtime's warnings go to the agent's log, not the container's stderr.
        log_fd = os.dup(log.fd())
        sys.stderr = open(log_fd, "w", buffering=1)  # noqa: SIM115 (lives until _exit)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        from isobox.linux import guard

        guard.close_fds_except({w, log_fd, *keep})  # the port, relayed fds: the agent's
        msg = {"ok": True, "pid": action()}
    except BaseException as exc:
        message = describe(exc)
        code = getattr(exc, "exit_code", 125)
        # The runtime's own 126/127 (an exec's), else what its message says.
        msg = {"ok": False, "error": message,
               "exit_code": code if code in (EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND)
               else classify(message)}
    try:
        os.write(w, json.dumps(msg).encode() + b"\n")
    finally:
        os._exit(0)


def _accept_from(listener: socket.socket, pid: int) -> socket.socket:
    """The connection the runtime made from process pid, and no other's."""
    listener.settimeout(CONSOLE_TIMEOUT)
    deadline = time.monotonic() + CONSOLE_TIMEOUT
    while True:
        try:
            fd, _ = listener._accept()  # type: ignore[attr-defined]
        except OSError as exc:
            raise IsoboxError(f"no console connection from the runtime: {describe(exc)}") from None
        conn = socket.socket(fileno=fd)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[0] == pid:
            return conn
        conn.close()
        if time.monotonic() > deadline:
            raise IsoboxError("no console connection from the runtime")


def _receive_pty(sock: socket.socket) -> int:
    from isobox.linux import console

    sock.settimeout(CONSOLE_TIMEOUT)
    try:
        return console.recv_fd(sock)[0]
    except OSError as exc:
        raise IsoboxError(f"no pty from the runtime: {describe(exc)}") from None
    finally:
        sock.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
