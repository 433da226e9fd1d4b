"""The shim process: ``python -I -m isobox.shim D --ready-fd N``.

See :mod:`isobox.shim.config` for the contract with the engine.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module, no stubs
import contextlib
import json
import os
import signal

from isobox.errors import Conflict, InvalidArgument, IsoboxError, NotFound
from isobox.linux import identity
from isobox.linux.inherit import ensure_stdio
from isobox.shim.config import SHIM_LOCK, SHIM_PID, SOCKET, STATE_FILE, ShimConfig, now
from isobox.shim.diag import describe, log
from isobox.shim.state import EXITED, ShimState

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.shim.runtimes import Runtime

USAGE = "usage: python -m isobox.shim CONTAINER_DIR [--ready-fd N]"


class Ready:
    """The one line the launcher waits for."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, msg: dict[str, object]) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, json.dumps(msg).encode() + b"\n")
        except OSError:
            pass  # the launcher gave up on us; carry on regardless
        os.close(self.fd)
        self.fd = -1

    def fail(self, message: str, code: int) -> None:
        self.send({"ok": False, "error": " ".join(message.split()), "exit_code": code})


def parse(argv: list[str]) -> tuple[str, int]:
    directory = None
    ready_fd = -1
    args = iter(argv)
    for arg in args:
        if arg == "--ready-fd" or arg.startswith("--ready-fd="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            try:
                ready_fd = int(value)
            except ValueError:
                raise InvalidArgument(f"--ready-fd: not a number: {value!r}") from None
        elif arg.startswith("-") or directory is not None:
            raise InvalidArgument(f"unexpected argument {arg!r}\n{USAGE}")
        else:
            directory = arg
    if directory is None:
        raise InvalidArgument(USAGE)
    return os.path.abspath(directory), ready_fd


def main(argv: list[str], *, detach: bool = True) -> int:
    try:
        container_dir, ready_fd = parse(argv)
    except InvalidArgument as exc:
        print(f"isobox-shim: {exc}", file=__import__("sys").stderr)
        return 2
    ready = Ready(ready_fd)
    if ready_fd >= 0:
        os.set_inheritable(ready_fd, False)  # never into the container or a runtime binary
    ensure_stdio()
    # Fork once: the shim is nobody's child but init's (no zombie for a
    # long-lived launcher to reap), and not a session leader (no controlling
    # terminal by accident). A launcher's spare monitor was forked so ahead.
    if detach and os.fork() != 0:
        os._exit(0)
    os.chdir("/")
    # _signal's, not signal.py's: its wrapper makes enums of the old handler,
    # and every object it touches is a page copied from the zygote's.
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    try:
        lock = lock_container(container_dir)
        _write_pid(os.path.join(container_dir, SHIM_PID))
        cfg = ShimConfig.load(container_dir)
    except (IsoboxError, OSError) as exc:
        log(f"cannot start: {describe(exc)}")
        ready.fail(describe(exc), 125)
        return 1
    return run(cfg, ready, lock)


LOCK_WAIT = 10.0  # a predecessor's teardown, or a removal, is that short


def lock_container(container_dir: str) -> int:
    """The container's monitor lock (SHIM_LOCK), taken before anything of
    the container's is touched; its fd. A container removed meanwhile (the
    file is gone, or unlinked while we waited) is NotFound."""
    from isobox.linux.files import flock_within

    try:
        fd = os.open(os.path.join(container_dir, SHIM_LOCK), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound("the container was removed") from None
    if not flock_within(fd, LOCK_WAIT):
        os.close(fd)
        raise Conflict("another monitor holds the container")
    if os.fstat(fd).st_nlink == 0:
        os.close(fd)
        raise NotFound("the container was removed")
    return fd


def _write_pid(path: str) -> None:
    """shim.pid, replaced atomically; not fsynced: after a crash of the host
    the pid in it is dead whatever the file says."""
    from isobox.linux.files import atomic_write

    atomic_write(path, str(os.getpid()).encode(), 0o644, durable=False)


def run(cfg: ShimConfig, ready: Ready, lock: int = -1) -> int:
    from isobox.linux.loop import Loop
    from isobox.shim import runtimes
    from isobox.shim.logs import JsonFileWriter
    from isobox.shim.monitor import Monitor
    from isobox.shim.rootfs import Rootfs
    from isobox.shim.server import Server

    identity.set_child_subreaper()
    state = ShimState(cfg.path(STATE_FILE), os.getpid())
    loop = Loop()
    with contextlib.ExitStack() as stack:
        try:
            runtime = runtimes.for_config(cfg)
            rootfs = Rootfs(cfg.rootfs, cfg.rootfs_mounts)
            stack.callback(rootfs.unmount)
            rootfs.mount()
            logs = JsonFileWriter(cfg.log_path, cfg.log_max_size, cfg.log_max_file)
            stack.callback(logs.close)
            monitor = Monitor(cfg, runtime, loop, logs, state, rootfs)
            if lock >= 0:
                monitor.on_final = lambda: os.close(lock)  # done with the container
            loop.handle_signals((signal.SIGCHLD, signal.SIGTERM), monitor.on_signal)
            stack.callback(loop.close)
            server = Server(cfg.path(SOCKET), loop, monitor)
            stack.callback(server.flush_all)
            monitor.server = server
            pid = monitor.create()
        except BaseException as exc:
            message = describe(exc)
            # The runtimes classify create failures (127, 126); all else is 125.
            code = exc.exit_code if isinstance(exc, IsoboxError) else 125
            log(f"create failed: {message}")
            stack.close()  # socket closed, rootfs unmounted
            state.status = EXITED
            state.exit_code = code
            state.error = message
            state.finished_at = now()
            with contextlib.suppress(OSError):
                state.save(durable=True)
            ready.fail(message, code)
            return 1
        ready.send({"ok": True, "pid": pid, "shim_pid": os.getpid()})
        loop.call_later(0, monitor.reap)  # an exit before the handlers ran
        log(f"container {cfg.id} created, init pid {pid}")
        try:
            loop.run()
        except BaseException as exc:
            log(f"giving up after repeated errors: {describe(exc)}")
            _abandon(runtime, state, describe(exc))
            return 1
        log(f"container {cfg.id} done: exit code {state.exit_code}")
    if cfg.exit_command:
        _spawn_detached(cfg.exit_command)
    return 0


def _spawn_detached(argv: list[str]) -> None:
    """Start the exit command (``--rm``: remove the container) in its own
    session and do not wait: it waits for this monitor to be gone."""
    try:
        os.posix_spawn(argv[0], argv, dict(os.environ), setsid=True)
    except OSError as exc:
        log(f"exit command {argv[0]} failed: {describe(exc)}")


def _abandon(runtime: Runtime, state: ShimState, message: str) -> None:
    """The loop failed: take the container down rather than leave it unmonitored."""
    with contextlib.suppress(IsoboxError, OSError):
        runtime.delete(force=True)
    state.status = EXITED
    state.pid = 0
    state.error = message
    state.finished_at = now()
    with contextlib.suppress(OSError):
        state.save(durable=True)
