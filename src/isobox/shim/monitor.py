"""One container's lifecycle as its shim sees it: create and start through the
runtime, stdio to the log and to attached clients, the exit (reaped as
subreaper), restarts, and the end."""

from __future__ import annotations

import os
import select
import signal
import time

from isobox.errors import Conflict, InvalidArgument, IsoboxError, NotRunning
from isobox.linux import console
from isobox.linux.loop import ERR, IN, OUT, Loop
from isobox.shim import oom
from isobox.shim.config import ZERO_TIME, ShimConfig, now
from isobox.shim.diag import describe, log
from isobox.shim.restart import Backoff, should_restart
from isobox.shim.state import CREATED, EXITED, RESTARTING, RUNNING, ShimState

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

    from isobox.shim.logs import JsonFileWriter
    from isobox.shim.rootfs import Rootfs
    from isobox.shim.runtimes import Runtime
    from isobox.shim.server import Conn, Server

READ_SIZE = 65536
STDIN_HIGH_WATER = 1 << 20  # stop reading attached clients' stdin beyond this backlog
DRAIN_TIMEOUT = 2.0  # output still arriving after the runtime deleted the container


HOOK_TIMEOUT = 60.0


def _wait_child(pid: int, timeout: float) -> int:
    """Its exit code; killed after ``timeout``. Only this pid is waited for."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.02)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Stdio:
    """The shim's ends of one run's stdio, and the container's ends for create."""

    def __init__(self, tty: bool, open_stdin: bool) -> None:
        self.outputs: dict[int, str] = {}  # fd -> stream name
        self.stdin = -1
        self.master = -1
        self._theirs: list[int] = []
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._theirs.append(null)
        self.container = (null, null, null)
        if tty:
            return  # the runtime puts the pty slave on 0/1/2
        try:
            out_r, out_w = os.pipe()
            self.outputs[out_r] = "stdout"
            self._theirs.append(out_w)
            err_r, err_w = os.pipe()
            self.outputs[err_r] = "stderr"
            self._theirs.append(err_w)
            stdin = null
            if open_stdin:
                stdin, self.stdin = os.pipe()
                self._theirs.append(stdin)
        except BaseException:
            self.close()
            raise
        self.container = (stdin, out_w, err_w)

    def created(self, master: int | None, open_stdin: bool) -> None:
        """The container has its ends: close ours of them."""
        for fd in self._theirs:
            os.close(fd)
        self._theirs = []
        if master is not None:
            self.master = master
            self.outputs = {master: "stdout"}
            if open_stdin:
                self.stdin = master
        for fd in (*self.outputs, self.stdin):
            if fd >= 0:
                os.set_blocking(fd, False)

    def close(self) -> None:
        for fd in {*self._theirs, *self.outputs, self.stdin} - {-1}:
            os.close(fd)
        self._theirs = []
        self.outputs = {}
        self.stdin = self.master = -1


class Monitor:
    def __init__(self, cfg: ShimConfig, runtime: Runtime, loop: Loop, logs: JsonFileWriter,
                 state: ShimState, rootfs: Rootfs) -> None:
        self.cfg = cfg
        self.runtime = runtime
        self.loop = loop
        self.logs = logs
        self.state = state
        self.rootfs = rootfs
        self.server: Server | None = None
        #: Called once the final state is written (the monitor lock's release).
        self.on_final: Callable[[], None] | None = None
        self.stdio: Stdio | None = None
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.user_stopped = False
        self.stop_timer: int | None = None
        self.restart_timer: int | None = None
        self.backoff = Backoff()
        self.run_started = 0.0
        self.done = False
        self.stop_waiters: list[Conn] = []
        self.exit_waiters: list[Conn] = []
        self.cgroup = oom.cgroup_path(os.path.join(cfg.bundle, "config.json"), cfg.id)

    # -- lifecycle -------------------------------------------------------

    def create(self) -> int:
        stdio = Stdio(self.cfg.tty, self.cfg.open_stdin)
        try:
            created = self.runtime.create(stdio.container, self.cfg.tty)
        except BaseException:
            stdio.close()
            raise
        stdio.created(created.master, self.cfg.open_stdin)
        self.stdio = stdio
        self.stdin_buf.clear()
        self.stdin_eof = False
        for fd in stdio.outputs:
            self.loop.add(fd, IN, self._on_stdio)
        if stdio.stdin >= 0 and stdio.stdin not in stdio.outputs:
            self.loop.add(stdio.stdin, 0, self._on_stdio)  # errors only, until there is input
        self.state.pid = created.pid
        self.state.status = CREATED
        self.state.paused = False
        self.state.save()
        return created.pid

    def start(self) -> None:
        if self.state.status != CREATED:
            raise Conflict(f"cannot start a container that is {self.state.status}")
        # In the monitor itself: a fork to keep the runtime's pages out of
        # it cost 2-3 ms of every start for about 250 KiB per monitor.
        self.runtime.start()
        state = self.state
        state.status = RUNNING
        state.started_at = now()
        self.run_started = time.monotonic()
        state.save()

    def kill(self, sig: int, all_processes: bool = False) -> None:
        stops = sig in (signal.SIGKILL, self.cfg.stop_signal)
        if self.state.status == RESTARTING and stops:
            self.user_stopped = True  # as Docker: no signal to send, no restart to make
            self._finish()
            return
        if self.state.status not in (CREATED, RUNNING):
            raise NotRunning(f"container is {self.state.status}")
        if stops:
            self.user_stopped = True
        self.runtime.kill(sig, all_processes)
        if stops and self.state.paused:
            self._resume_quietly()  # a frozen process cannot act on the signal

    def stop(self, conn: Conn | None, sig: int, timeout: int) -> None:
        self.user_stopped = True
        if conn is not None:
            self.stop_waiters.append(conn)
        if self.state.status == RESTARTING:
            self._finish()
            return
        if self.state.status == CREATED:
            sig, timeout = signal.SIGKILL, -1  # it never ran: nothing to shut down cleanly
        if self.state.status not in (CREATED, RUNNING):
            return
        if self.stop_timer is not None and sig != signal.SIGKILL:
            return  # a stop is under way; this caller waits for it too
        try:
            self.runtime.kill(sig, all_processes=sig == signal.SIGKILL)
        except NotRunning:
            pass  # exiting already: the reply comes with the exit
        if self.state.paused:
            self._resume_quietly()
        if timeout >= 0 and sig != signal.SIGKILL:
            self.loop.cancel(self.stop_timer)
            self.stop_timer = self.loop.call_later(timeout, self._kill_hard)

    def _kill_hard(self) -> None:
        self.stop_timer = None
        if self.state.status not in (CREATED, RUNNING):
            return
        log("stop timeout: sending SIGKILL")
        try:
            self.runtime.kill(signal.SIGKILL, all_processes=True)
        except IsoboxError as exc:
            log(f"SIGKILL after the stop timeout failed: {exc}")
        if self.state.paused:
            self._resume_quietly()

    def wait(self, conn: Conn) -> None:
        self.exit_waiters.append(conn)

    def pause(self) -> None:
        if self.state.status != RUNNING:
            raise NotRunning(f"container is {self.state.status}")
        if self.state.paused:
            raise Conflict("container is already paused")
        self.runtime.pause()
        self.state.paused = True
        self.state.save()

    def resume(self) -> None:
        if not self.state.paused:
            raise Conflict("container is not paused")
        self.runtime.resume()
        self.state.paused = False
        self.state.save()

    def _resume_quietly(self) -> None:
        try:
            self.resume()
        except IsoboxError as exc:
            log(f"resume failed: {exc}")

    def resize(self, height: int, width: int) -> None:
        if not self.cfg.tty:
            raise InvalidArgument("the container has no tty")
        if self.stdio is None or self.stdio.master < 0:
            raise NotRunning("container is not running")
        console.set_size(self.stdio.master, height, width)

    def check_attach(self) -> None:
        if self.state.status == RESTARTING:
            raise Conflict("cannot attach to a restarting container, wait until it is running")
        if self.state.status == EXITED:
            raise NotRunning("container has exited")

    # -- signals and exits -----------------------------------------------

    def on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            self.reap()
        elif sig == signal.SIGTERM:
            log("SIGTERM: stopping the container")
            self.stop(None, self.cfg.stop_signal, self.cfg.stop_timeout)

    def reap(self) -> None:
        """Collect every exited child (we are a subreaper: orphans come to us)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.state.pid and self.state.status in (CREATED, RUNNING):
                self._on_exit(status)

    def _on_exit(self, status: int) -> None:
        st = self.state
        started = st.status == RUNNING
        st.exit_code = exit_code(status)
        st.finished_at = now()
        st.pid = 0
        st.paused = False
        ran_for = time.monotonic() - self.run_started if started else 0.0
        st.oom_killed = oom.oom_kills(self.cgroup) > 0  # before delete removes the cgroup
        self.loop.cancel(self.stop_timer)
        self.stop_timer = None
        self._drain(0.0)
        try:
            self.runtime.delete(force=True)
        except (IsoboxError, OSError) as exc:
            log(f"runtime delete failed: {describe(exc)}")
        self._drain(DRAIN_TIMEOUT)
        self.logs.flush()
        self._close_stdio()
        # A container that never started is not restarted (it would start it).
        if not started or not should_restart(self.cfg.restart, st.exit_code,
                                             st.restart_count, self.user_stopped):
            self._finish()
            return
        st.restart_count += 1
        st.status = RESTARTING
        st.save()
        self._end_streams()  # after the state: a client seeing EOF reads "restarting"
        delay = self.backoff.next(ran_for)
        log(f"exited with {st.exit_code}: restart {st.restart_count} in {delay:.1f}s")
        self.restart_timer = self.loop.call_later(delay, self._restart)

    def _restart(self) -> None:
        self.restart_timer = None
        created = False
        try:
            pid = self.create()
            created = True
            if self.cfg.restart_hook:
                # Still "restarting" to the world until it runs: a stop now is final.
                self.state.status = RESTARTING
                self.state.save()
                self._run_restart_hook(pid)
                self.state.status = CREATED
            self.start()
        except (IsoboxError, OSError) as exc:
            message = describe(exc)
            log(f"restart failed: {message}")
            self.state.error = message
            if created and self.state.status != RUNNING:  # created, not started: take it down
                try:
                    self.runtime.delete(force=True)
                except (IsoboxError, OSError):
                    pass
            elif isinstance(exc, IsoboxError):
                self.state.exit_code = exc.exit_code
            self._finish()

    def _run_restart_hook(self, pid: int) -> None:
        """The engine's hook (networks) for the new init; blocks, like create."""
        env = {"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin",
               "ISOBOX_INIT_PID": str(pid)}
        try:
            child = os.posix_spawn(self.cfg.restart_hook[0], self.cfg.restart_hook, env)
        except OSError as exc:
            raise IsoboxError(f"restart hook: {exc.strerror}") from None
        status = _wait_child(child, HOOK_TIMEOUT)
        if status != 0:
            raise IsoboxError(f"restart hook {' '.join(self.cfg.restart_hook[-3:])} failed "
                              f"(status {status})")

    def _finish(self) -> None:
        """Done for good: unmount, close the socket, final state, then answer."""
        if self.done:
            return
        self.done = True
        self.loop.cancel(self.restart_timer)
        self.loop.cancel(self.stop_timer)
        self._close_stdio()
        st = self.state
        st.status = EXITED
        st.pid = 0
        if st.finished_at == ZERO_TIME:
            st.finished_at = now()
        try:
            self.rootfs.unmount()
        except OSError as exc:
            log(f"unmounting the rootfs failed: {describe(exc)}")
        if self.server is not None:
            self.server.close_listener()
        # The exit code is kept across a crash of the host, unless the
        # container is removed at its end (--rm: its client reads it now, and
        # after a crash the engine removes it without reading it).
        st.save(durable=not self.cfg.exit_command)
        if self.on_final is not None:
            self.on_final()
            self.on_final = None
        # Only now (state final, rootfs unmounted) may clients learn of the end.
        self._end_streams()
        if self.server is not None:
            for conn in self.stop_waiters:
                self.server.reply(conn, {"ok": True, "exit_code": st.exit_code})
            for conn in self.exit_waiters:
                self.server.reply(conn, {"ok": True, "exit_code": st.exit_code,
                                         "oom_killed": st.oom_killed})
        self.stop_waiters.clear()
        self.exit_waiters.clear()
        self.loop.stop()

    def _close_stdio(self) -> None:
        stdio, self.stdio = self.stdio, None
        if stdio is not None:
            for fd in (*stdio.outputs, stdio.stdin):
                if fd >= 0:
                    self.loop.remove(fd)
            stdio.close()
        self.stdin_buf.clear()
        if self.server is not None:
            self.server.throttle_stdin(False)

    def _end_streams(self) -> None:
        if self.server is not None:
            self.server.end_attached()

    # -- stdio -----------------------------------------------------------

    def _on_stdio(self, fd: int, events: int) -> None:
        stdio = self.stdio
        if stdio is None:
            return
        if fd == stdio.stdin and events & (OUT | ERR):
            if events & ERR and fd not in stdio.outputs:
                self._drop_stdin()  # the container closed its stdin
            else:
                self._flush_stdin()
        if fd in stdio.outputs and events & (IN | ERR):
            self._read_output(fd)

    def _read_output(self, fd: int) -> bool:
        """One read; False at EOF (then the fd is closed) or when nothing is there."""
        stdio = self.stdio
        assert stdio is not None
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:  # EIO: the pty's last slave closed
            data = b""
        if not data:
            self.loop.remove(fd)
            del stdio.outputs[fd]
            if fd == stdio.stdin:
                stdio.stdin = -1
            if fd == stdio.master:
                stdio.master = -1
            os.close(fd)
            return False
        stream = stdio.outputs[fd]
        self.logs.write(stream, data)
        if self.server is not None:
            self.server.broadcast(stream, data)
        return True

    def _drain(self, timeout: float) -> None:
        """Read what the container wrote; with a timeout, until EOF or the deadline."""
        stdio = self.stdio
        if stdio is None:
            return
        deadline = time.monotonic() + timeout
        while stdio.outputs:
            for fd in list(stdio.outputs):
                while fd in stdio.outputs and self._read_output(fd):
                    pass
            left = deadline - time.monotonic()
            if not stdio.outputs or left <= 0:
                return
            poller = select.poll()
            for fd in stdio.outputs:
                poller.register(fd, IN)
            poller.poll(int(left * 1000) + 1)

    def write_stdin(self, data: bytes) -> None:
        stdio = self.stdio
        if stdio is None or stdio.stdin < 0 or self.stdin_eof:
            return
        self.stdin_buf += data
        self._flush_stdin()

    def close_stdin(self) -> None:
        """The client attached with stdin_once hung up: EOF for the container
        (a tty's stdin is its terminal, which stays)."""
        stdio = self.stdio
        if stdio is None or stdio.stdin < 0 or stdio.stdin in stdio.outputs:
            return
        self.stdin_eof = True
        if not self.stdin_buf:
            self._drop_stdin()

    def _flush_stdin(self) -> None:
        stdio = self.stdio
        assert stdio is not None
        fd = stdio.stdin
        while self.stdin_buf:
            try:
                n = os.write(fd, self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: nobody reads the container's stdin any more
                self._drop_stdin()
                return
            del self.stdin_buf[:n]
        if not self.stdin_buf and self.stdin_eof:
            self._drop_stdin()
            return
        base = IN if fd in stdio.outputs else 0
        self.loop.modify(fd, base | (OUT if self.stdin_buf else 0))
        if self.server is not None:
            self.server.throttle_stdin(len(self.stdin_buf) > STDIN_HIGH_WATER)

    def _drop_stdin(self) -> None:
        stdio = self.stdio
        self.stdin_buf.clear()
        if self.server is not None:
            self.server.throttle_stdin(False)
        if stdio is None or stdio.stdin < 0:
            return
        fd, stdio.stdin = stdio.stdin, -1
        if fd in stdio.outputs:
            self.loop.modify(fd, IN)  # a tty: the terminal stays for output
        else:
            self.loop.remove(fd)
            os.close(fd)
