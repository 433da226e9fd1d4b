"""``exec`` for the Engine API: the process runs through the container's
runtime as for the CLI, but its stdio are handed to the caller (pipes, or
with a tty the pty master the runtime sends to a console socket, as runc's
``--console-socket``), so that the daemon relays them over a connection."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any

from isobox.engine.execs import exec_spec, runtime_binary
from isobox.errors import Conflict, IsoboxError

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService

CONSOLE_TIMEOUT = 30.0


class ExecProcess:
    """A started exec: ``stdin``/``stdout``/``stderr`` are fds (None when
    not asked for); with a tty ``master`` is the pty, for all three."""

    def __init__(self, proc: subprocess.Popen[bytes], *, master: int | None,
                 pid_file: str, workdir: str) -> None:
        self.proc = proc
        self.master = master
        self._pid_file = pid_file
        self._workdir = workdir
        self.stdin = proc.stdin.fileno() if proc.stdin is not None else None
        self.stdout = proc.stdout.fileno() if proc.stdout is not None else None
        self.stderr = proc.stderr.fileno() if proc.stderr is not None else None

    @property
    def pid(self) -> int:
        """The exec'd process's pid (in the host's pid namespace), 0 until known."""
        try:
            with open(self._pid_file) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def resize(self, rows: int, cols: int) -> None:
        from isobox.linux import console

        if self.master is None:
            raise Conflict("the exec has no tty to resize")
        console.set_size(self.master, rows, cols)

    def wait(self) -> int:
        return self.proc.wait()

    def close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
        shutil.rmtree(self._workdir, ignore_errors=True)


def start_exec(service: ContainerService, ref: str, cmd: list[str], *, tty: bool = False,
               stdin: bool = False, env: list[str] | None = None, user: str | None = None,
               workdir: str | None = None, privileged: bool = False,
               detach: bool = False) -> ExecProcess:
    """Start ``cmd`` in the running container ``ref``."""
    record, process = exec_spec(service, ref, cmd, tty=tty, env=env, user=user,
                                workdir=workdir, privileged=privileged)
    service.event(record, "exec_create: " + " ".join(cmd))
    if record.isolation == "vm":
        return _start_vm_exec(service, record, process, cmd, tty=tty, stdin=stdin,
                              detach=detach)
    # A short directory: a console socket's path must fit in sun_path.
    work = tempfile.mkdtemp(prefix="isobox-exec-")
    try:
        process_file = os.path.join(work, "process.json")
        with open(process_file, "w") as f:
            json.dump(process, f)
        pid_file = os.path.join(work, "pid")
        argv = [runtime_binary(record.runtime), "--root", service.runtime_root, "exec",
                "--process", process_file, "--pid-file", pid_file]
        listener = None
        if tty:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(os.path.join(work, "console.sock"))
            listener.listen(1)
            argv += ["--console-socket", os.path.join(work, "console.sock")]
        if detach:
            argv.append("--detach")
        argv.append(record.id)
        service.event(record, "exec_start: " + " ".join(cmd))
        pipe = subprocess.PIPE
        proc = subprocess.Popen(
            argv, stdin=pipe if stdin and not tty else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if tty else pipe,
            stderr=pipe, start_new_session=True)
        master = None
        if listener is not None:
            try:
                master = _receive_console(listener, proc)
            finally:
                listener.close()
            if proc.stderr is not None:
                _drain_later(proc)
        return ExecProcess(proc, master=master, pid_file=pid_file, workdir=work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _start_vm_exec(service: ContainerService, record: Any, process: dict[str, Any],
                   cmd: list[str], *, tty: bool, stdin: bool, detach: bool) -> ExecProcess:
    """The VM's exec client as the child whose stdio the daemon relays; with a
    tty, a host pty (the client's controlling terminal, so resizes reach it as
    SIGWINCH and travel on to the guest)."""
    import sys

    from isobox.linux import console

    work = tempfile.mkdtemp(prefix="isobox-exec-")
    master = slave = None
    try:
        process_file = os.path.join(work, "process.json")
        with open(process_file, "w") as f:
            json.dump(process, f)
        argv = [sys.executable, "-I", "-m", "isobox.vm.execclient", service.dir(record.id),
                process_file]
        argv += [flag for flag, on in (("--tty", tty), ("--interactive", stdin or tty),
                                       ("--detach", detach)) if on]
        service.event(record, "exec_start: " + " ".join(cmd))
        pipe = subprocess.PIPE
        if tty:
            master, slave = console.openpty()
            proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=pipe,
                                    start_new_session=True,
                                    preexec_fn=lambda: console.make_controlling(0))
            os.close(slave)
            slave = None
            _drain_later(proc)
        else:
            proc = subprocess.Popen(argv, stdin=pipe if stdin else subprocess.DEVNULL,
                                    stdout=pipe, stderr=pipe, start_new_session=True)
        return ExecProcess(proc, master=master, pid_file=os.path.join(work, "pid"),
                           workdir=work)
    except BaseException:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
        raise


def _receive_console(listener: socket.socket, proc: subprocess.Popen[bytes]) -> int:
    from isobox.linux import console

    listener.settimeout(0.1)
    deadline = time.monotonic() + CONSOLE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise IsoboxError(err.strip().removeprefix("isobox-runtime: ")
                                  or f"exec failed (exit status {proc.returncode})"
                                  ) from None
            continue
        with conn:
            conn.settimeout(CONSOLE_TIMEOUT)
            fd, _ = console.recv_fd(conn)
            return fd
    proc.kill()
    raise IsoboxError("the runtime sent no console")


def _drain_later(proc: subprocess.Popen[bytes]) -> None:
    """With a tty the runtime's stderr only carries its own errors: keep
    reading it so that it never blocks on a full pipe."""
    import threading

    def drain() -> None:
        assert proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while proc.stderr.read(65536):
                pass

    threading.Thread(target=drain, daemon=True).start()


def exec_died(service: ContainerService, ref: str, cmd: list[str], code: int) -> None:
    """The exec_die event, once the relay has the exit code."""
    container_event(service, ref, "exec_die", exitCode=str(code))


def container_event(service: ContainerService, ref: str, action: str, **extra: str) -> None:
    """An event of the container ``ref`` (none when it is gone): ``detach``,
    ``exec_detach``, ``exec_die``."""
    try:
        service.event(service.get(ref), action, **extra)
    except IsoboxError:
        pass


def exec_inspect(exec_id: str, config: dict[str, Any], container_id: str, *, running: bool,
                 exit_code: int | None, pid: int) -> dict[str, Any]:
    """Docker's ``GET /exec/{id}/json``."""
    cmd = list(config.get("Cmd") or [])
    return {
        "ID": exec_id, "Running": running, "ExitCode": exit_code, "ProcessConfig": {
            "tty": bool(config.get("Tty")), "entrypoint": cmd[0] if cmd else "",
            "arguments": cmd[1:], "privileged": bool(config.get("Privileged")),
            "user": config.get("User") or ""},
        "OpenStdin": bool(config.get("AttachStdin")),
        "OpenStderr": bool(config.get("AttachStderr")),
        "OpenStdout": bool(config.get("AttachStdout")),
        "CanRemove": False, "ContainerID": container_id,
        "DetachKeys": config.get("DetachKeys") or "", "Pid": pid,
    }
