"""The CLI's command server: each ``isobox`` command run by a warm process.

A daemonless CLI pays for a Python start-up and its imports on every
command (70-80 ms of ``isobox run``, more than the container's own start).
Docker's CLI pays for a daemon instead. isobox keeps its model (no daemon
needed, state on disk, any command may run on its own) and adds a per-root
**command server**: a detached process that has imported the CLI and the
engine once and forks a **worker** per command. The worker becomes the
command: it takes the caller's stdin/stdout/stderr and working directory
(passed as fds), its argv, environment, umask, rlimits and ignored signals,
runs the CLI's ``main`` and exits with its code; the caller (the thin front
end, :func:`forward`) relays the signals it gets to the worker (through a
pidfd) and exits the way the worker did: same code, or killed by the same
signal. If the caller dies, the server kills the worker, as the command
would have died with its process.

When nothing answers (no server yet, a stale one, a caller with other
privileges), the command runs in the caller's own interpreter as before,
and the first such command starts a server for the next ones (the same
life as the shim launcher's: one per root, a flock, ``cli-server.{sock,
lock,pid,log}`` in the run root, exits after ``{"cli-server":
{"idle-timeout": N}}`` idle seconds (600 by default; 0: never started), or
when any isobox module, the package directory or the settings file
changes). ``ISOBOX_CLI_SERVER=0`` in a caller's environment keeps its
commands in process.

Security: the socket is 0600 in the root-only run root, and a worker acts
with the server's privileges, so the server serves only a caller whose
credentials, capability sets, no_new_privs, seccomp state, namespaces and
root directory are exactly its own
(:func:`isobox.linux.forkserver.differs_from_self`); any other caller runs
its command itself.

This module's top level imports nothing but C modules: the front end uses
it before anything else is loaded."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import os
import sys

from isobox.engine import defaults
from isobox.linux import forkserver

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

SOCKET_NAME = "cli-server.sock"
DISABLE_ENV = "ISOBOX_CLI_SERVER"
MAX_REQUEST = 256 * 1024
STDIO_AND_CWD = 4  # fds passed with a request: 0, 1, 2 and the working directory
#: The most pages a spare copies ahead (isobox.linux.prefault): what the
#: commands seen so far wrote to, up to 16 MiB.
MAX_PREFAULT = 16 * 1024 * 1024
ENDING = b"ending"  # a spare's word to the server that its command is over
#: Signals the front end passes on to its worker: every one a terminal, a
#: shell or a supervisor may send a command (not SIGKILL/SIGSTOP, which
#: cannot be caught: the server sees the caller die and kills the worker).
FORWARDED = (1, 2, 3, 10, 12, 14, 15, 18, 20, 23, 24, 25, 26, 27, 28, 29, 30)
SIGCONT, SIGTSTP, SIGSTOP = 18, 20, 19
RLIMITS = range(16)  # RLIMIT_CPU..RLIMIT_RTTIME
LOST = "Error: the isobox command server stopped before the command finished\n"


# ---------------------------------------------------------------- the front end


def socket_path(argv: list[str], env: dict[str, str] | os._Environ[str]) -> str | None:
    """The command server's socket for this command line (the root comes
    from ``--root`` before the verb, else ISOBOX_ROOT, else the default);
    None when the top-level options are not plain enough to tell."""
    root = None
    args = iter(argv[1:])
    for arg in args:
        if arg == "--root":
            root = next(args, None)
            if root is None:
                return None
        elif arg.startswith("--root="):
            root = arg[len("--root="):]
        elif arg == "--insecure-registry":
            next(args, None)
        elif arg.startswith("--insecure-registry="):
            continue
        elif arg.startswith("-") and arg not in ("-h", "--help", "-v", "--version"):
            return None  # an option click will judge: let the full CLI do it
        else:
            break  # the verb: what follows is its own
    return os.path.join(defaults.roots(root, env)[1], SOCKET_NAME)


#: Why the last :func:`forward` did not forward: "absent" or "stale" (the
#: full CLI then starts a server for the next command), else a reason not to.
declined = ""


def forward(argv: list[str]) -> int | None:
    """Run this command in the root's command server: the exit status to
    leave with (negative: killed by that signal), or None when no server
    took it (the caller runs the command itself; ``declined`` says why)."""
    global declined
    env = os.environ
    if env.get(DISABLE_ENV) == "0":
        declined = "off"
        return None
    path = socket_path(argv, env)
    if path is None:
        declined = "options"
        return None
    sock = _connect(path)
    if sock is None:
        declined = "absent"
        return None
    try:
        request = _request(argv, env)
        if len(request) > MAX_REQUEST:
            declined = "too large"
            return None
        answer, pidfd = _send(sock, request)
        status = _final(answer)
        if status is not None:  # the worker was done before the server said "pid"
            if pidfd is not None:
                os.close(pidfd)
            return status
        if pidfd is None:
            declined = "stale" if answer == b"stale" else answer.decode(errors="replace")
            return None
        return _relay(sock, pidfd)
    finally:
        sock.close()


def _connect(path: str) -> socket.socket | None:
    from isobox.linux.unixsock import ShortPath

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        with ShortPath(path) as short:
            sock.connect(short)
        return sock
    except OSError:
        sock.close()
        return None


def _request(argv: list[str], env: dict[str, str] | os._Environ[str]) -> bytes:
    import _signal  # type: ignore[import-not-found]  # the C module: signal.py imports enum
    import resource

    src, python = forkserver.identity()
    umask = os.umask(0o022)
    os.umask(umask)
    fields = [f"src={src}", f"python={python}", f"umask={umask:o}",
              f"settings={defaults.settings_file(env)}"]
    fields += [f"rlimit={n}:{soft}:{hard}"
               for n in RLIMITS for soft, hard in (resource.getrlimit(n),)]
    fields += [f"ign={sig}" for sig in FORWARDED
               if _signal.getsignal(sig) == _signal.SIG_IGN]
    items = [os.fsencode(f) for f in fields]
    items += [b"arg=" + os.fsencode(arg) for arg in argv]
    items += [b"env=" + key + b"=" + value for key, value in os.environb.items()]
    return b"\0".join(items)


def _send(sock: socket.socket, request: bytes) -> tuple[bytes, int | None]:
    """Send the request with our stdio and working directory: (the answer,
    the worker's pidfd) or (the reason, None)."""
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        forkserver.send(sock, request, (0, 1, 2, cwd))
        answer, fds = forkserver.receive(sock, 256, 1)
    except OSError as exc:
        return f"cannot send: {exc.strerror}".encode(), None
    finally:
        os.close(cwd)
    if answer == b"pid" and len(fds) == 1:
        return answer, fds[0]
    for fd in fds:
        os.close(fd)
    return answer or b"no answer", None


def _relay(sock: socket.socket, pidfd: int) -> int:
    """Pass our signals on to the worker until the server reports its end:
    its exit code, or minus the signal that killed it."""
    import _signal

    def pass_on(sig: int, _frame: object) -> None:
        try:
            _signal.pidfd_send_signal(pidfd, sig)
        except OSError:
            return  # it has just ended: its status is on the way
        if sig == SIGTSTP:  # stop with it, as the command's own process would
            os.kill(os.getpid(), SIGSTOP)

    for sig in FORWARDED:
        if _signal.getsignal(sig) != _signal.SIG_IGN:
            _signal.signal(sig, pass_on)
    try:
        while True:
            try:
                end = sock.recv(64)
            except InterruptedError:
                continue
            status = _final(end)
            if status is not None:
                return status
            os.write(2, LOST.encode())
            return 125
    finally:
        for sig in FORWARDED:
            if _signal.getsignal(sig) == pass_on:
                _signal.signal(sig, _signal.SIG_DFL)
        os.close(pidfd)


def _final(message: bytes) -> int | None:
    """The status an end message carries ("exit N", or "signal N" as -N):
    from the worker itself (before its teardown) or from the server (after
    reaping it); whichever comes first, even before the server's "pid"."""
    kind, _, value = message.partition(b" ")
    if kind == b"exit" and value.isdigit():
        return int(value)
    if kind == b"signal" and value.isdigit():
        return -int(value)
    return None


def leave(status: int) -> None:
    """Exit the way the worker did: its code, or killed by its signal."""
    if status >= 0:
        os._exit(status)
    import _signal

    sig = -status
    if sig not in (9, SIGSTOP):  # those two cannot be caught, nor need resetting
        _signal.signal(sig, _signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal whose default is not to die (or that is blocked)


# ---------------------------------------------------------------- starting one


def spawn(run_root: str, keep: float, settings: str) -> None:
    """Start a detached command server for ``run_root`` (it exits after
    ``keep`` idle seconds, never if negative) and do not wait for it; a
    second one started at once finds the first's lock and leaves."""
    import subprocess

    path = os.path.join(run_root, SOCKET_NAME)
    try:
        os.makedirs(run_root, mode=0o700, exist_ok=True)
        with open(forkserver.base_name(path) + ".log", "ab") as err:
            subprocess.Popen(
                [sys.executable, "-I", "-m", "isobox.cli.resident", "--keep", str(keep),
                 "--settings", settings, path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True, cwd="/",
                env={"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"})
    except OSError:
        pass  # the next command runs in process again, and tries again


# ---------------------------------------------------------------- the server


class Request:
    """A parsed request: what the command would have had in its own process."""

    def __init__(self, msg: bytes) -> None:
        self.fields: dict[str, str] = {}
        self.argv: list[str] = []
        self.env: dict[bytes, bytes] = {}
        self.rlimits: list[tuple[int, int, int]] = []
        self.ignored: list[int] = []
        for item in msg.split(b"\0"):
            key, _, value = item.partition(b"=")
            if key == b"arg":
                self.argv.append(os.fsdecode(value))
            elif key == b"env":
                name, _, val = value.partition(b"=")
                self.env[name] = val
            elif key == b"rlimit":
                which, soft, hard = (int(x) for x in value.split(b":"))
                self.rlimits.append((which, soft, hard))
            elif key == b"ign":
                self.ignored.append(int(value))
            else:
                self.fields[key.decode()] = os.fsdecode(value)


def _refusal(request: Request, stamp: forkserver.Stamp, mine: tuple[str, str],
             settings: str, peer: int) -> str:
    """Why this server must not run the request ("" if it may); "stale" if
    it is out of date (the caller starts a new one)."""
    import resource

    if (request.fields.get("src"), request.fields.get("python")) != mine:
        return "stale"
    if stamp.changed():
        return "stale"
    if request.fields.get("settings") != settings:
        return "another settings file"
    if not request.argv:
        return "no command line"
    why = forkserver.differs_from_self(peer)
    if why:
        return why
    def ceiling(value: int) -> float:
        return float("inf") if value == resource.RLIM_INFINITY else value

    for which, _soft, hard in request.rlimits:
        if ceiling(hard) > ceiling(resource.getrlimit(which)[1]):
            return "its resource limits exceed the server's"  # raising needs CAP_SYS_RESOURCE
    return ""


def _peer_pid(conn: socket.socket) -> int:
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


class _Server:
    """The accept loop: workers in flight by pidfd; a caller's end of the
    connection closing before its worker's kills the worker."""

    def __init__(self, path: str, keep: float, settings: str,
                 run: Callable[[list[str]], int], lock: int) -> None:
        self.lock = lock
        self.path = path
        self.keep = keep
        self.settings = settings
        self.run = run
        self.listener, self.inode = forkserver.bind(path)
        self.stamp = forkserver.Stamp(extra=(settings,))
        self.mine = forkserver.identity()
        # pidfd -> (pid, the caller's connection, the spare's channel or None)
        self.workers: dict[int, tuple[int, socket.socket, socket.socket | None]] = {}
        self.spare: tuple[int, int, socket.socket] | None = None  # pid, pidfd, its channel
        self.pages = b""  # what a spare copies ahead: the pages its forerunners wrote to

    def serve(self) -> None:
        import select
        import time

        last = time.monotonic()
        closing = False
        gone: set[int] = set()  # callers that left: their workers are being killed
        while not closing or self.workers:
            if not closing and not self.workers:
                self.fork_spare()  # idle now: the next request finds its worker forked
            poller = select.poll()  # not select(): hundreds of commands at once pass 1024 fds
            if not closing:
                poller.register(self.listener.fileno(), select.POLLIN)
            for pidfd, (_, conn, _) in self.workers.items():
                poller.register(pidfd, select.POLLIN)
                if conn.fileno() not in gone:
                    poller.register(conn.fileno(), select.POLLIN)
            timeout = 60.0
            if self.keep >= 0 and not self.workers:
                timeout = min(timeout, max(0.0, last + self.keep - time.monotonic()))
            ready = [fd for fd, _ in poller.poll(timeout * 1000)]
            for fd in ready:
                if not closing and fd == self.listener.fileno():
                    closing = self._accept()
                    last = time.monotonic()
                elif fd in self.workers:
                    gone.discard(self.workers[fd][1].fileno())
                    self._finished(fd)
                elif fd not in gone:
                    gone.add(fd)
                    self._caller_gone(fd)
            if not ready and not closing and not self.workers and (
                    not forkserver.ours(self.path, self.inode)
                    or (self.keep >= 0 and time.monotonic() >= last + self.keep)):
                forkserver.retire(self.path, self.inode)
                closing = True
            if closing and self.listener.fileno() >= 0:
                self.drop_spare()
                self._turn_away()
        self.drop_spare()

    def _turn_away(self) -> None:
        """Once retired: answer what is queued "stale" (those callers run in
        process and start a successor), then stop listening."""
        self.listener.setblocking(False)
        while True:
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            except OSError:
                break
            conn = socket.socket(fileno=fd)
            try:
                conn.send(b"stale")
            except OSError:
                pass
            conn.close()
        self.listener.close()

    def _accept(self) -> bool:
        """Serve one connection; True once this server is stale."""
        fd, _ = self.listener._accept()  # type: ignore[attr-defined]
        conn = socket.socket(fileno=fd)
        fds: list[int] = []
        try:
            conn.settimeout(1.0)  # a caller stopped before it sent must not stop the server
            msg, fds = forkserver.receive(conn, MAX_REQUEST, STDIO_AND_CWD)
            conn.settimeout(None)
            if len(fds) != STDIO_AND_CWD:
                conn.close()
                return False
            request = Request(msg)
            why = _refusal(request, self.stamp, self.mine, self.settings, _peer_pid(conn))
            if why:
                conn.send(why.encode())
                conn.close()
                if why == "stale":
                    forkserver.retire(self.path, self.inode)
                    return True
                return False
            pid, pidfd, channel = self._hand_over(msg, request, fds, conn)
            self.workers[pidfd] = (pid, conn, channel)  # from now on, _finished closes them
            try:
                forkserver.send(conn, b"pid", (pidfd,))
            except OSError:  # the caller died since it asked: so does its command
                self._caller_gone(conn.fileno())
        except (OSError, ValueError) as exc:
            print(f"isobox-cli-server: {exc}", file=sys.stderr, flush=True)
            conn.close()
        finally:
            for received in fds:
                os.close(received)
        return False

    def _hand_over(self, msg: bytes, request: Request, fds: list[int],
                   conn: socket.socket) -> tuple[int, int, socket.socket | None]:
        """(pid, pidfd, channel) of the worker that now runs the request:
        the spare, forked while the server was idle (its channel then brings
        back the pages it wrote to), or a fork made now (None)."""
        spare, self.spare = self.spare, None
        if spare is not None:
            pid, pidfd, channel = spare
            try:
                forkserver.send(channel, msg, (*fds, conn.fileno()))
                return pid, pidfd, channel
            except OSError:  # it died: fork one now
                channel.close()
                self._drop(pid, pidfd)
        pid = os.fork()
        if pid == 0:
            self._worker(request, fds, conn)
        return pid, os.pidfd_open(pid), None

    def fork_spare(self) -> None:
        """Fork the worker for the next request ahead of it (off the
        request's path: a fork of this process costs 2-3 ms, and so do the
        copy-on-write faults it takes ahead). It waits on a socket pair for
        the request, its fds and its caller's connection."""
        if self.spare is not None or self.listener.fileno() < 0:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._spare(theirs)
        theirs.close()
        self.spare = (pid, os.pidfd_open(pid), ours)

    def drop_spare(self) -> None:
        if self.spare is not None:
            pid, pidfd, channel = self.spare
            self.spare = None
            channel.close()  # it sees the end and exits
            self._drop(pid, pidfd)

    @staticmethod
    def _drop(pid: int, pidfd: int) -> None:
        import _signal

        try:
            _signal.pidfd_send_signal(pidfd, 9)
        except OSError:
            pass
        os.close(pidfd)
        os.waitpid(pid, 0)

    def _finished(self, pidfd: int) -> None:
        pid, conn, channel = self.workers.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if channel is not None:
            self._learn(channel)
        if os.WIFSIGNALED(status):
            end = f"signal {os.WTERMSIG(status)}"
        else:
            end = f"exit {os.waitstatus_to_exitcode(status)}"
        try:
            conn.send(end.encode())
        except OSError:
            pass  # the caller is gone
        conn.close()

    def _learn(self, channel: socket.socket) -> None:
        """Keep the pages a spare's command wrote to (it sent them, after
        ENDING, before it exited), for the next spare to copy ahead."""
        from isobox.linux import prefault

        pages = b""
        channel.setblocking(False)
        try:
            while True:
                message = channel.recv(MAX_PREFAULT // prefault.PAGE * 16)
                if not message:
                    break
                if message != ENDING:
                    pages = message
        except OSError:
            pass  # nothing more queued
        channel.close()
        if pages and len(pages) % 16 == 0 and (
                prefault.count(pages) * prefault.PAGE <= MAX_PREFAULT):
            self.pages = pages

    def _caller_gone(self, fd: int) -> None:
        """The caller's end closed before its worker ended: the command dies
        as it would have with its own process; _finished reaps it."""
        import _signal

        for pidfd, (_, conn, channel) in self.workers.items():
            if conn.fileno() == fd:
                if channel is not None and _queued(channel):
                    return  # it had ended the command and told its caller: let it report
                try:
                    _signal.pidfd_send_signal(pidfd, 9)
                except OSError:
                    pass
                return

    def _leave_server(self) -> None:
        """In a fork: let go of what is the server's (a long command must not
        keep a successor out, nor a caller's connection open)."""
        if self.listener.fileno() >= 0:
            self.listener.close()
        os.close(self.lock)
        for pidfd, (_, other, channel) in self.workers.items():
            os.close(pidfd)
            other.close()
            if channel is not None:
                channel.close()
        if self.spare is not None:
            os.close(self.spare[1])
            self.spare[2].close()

    def _spare(self, channel: socket.socket) -> None:
        """In the spare: copy ahead the pages the last commands wrote to,
        wait for a request, then be its worker."""
        try:
            import select

            from isobox.linux import identity, prefault

            identity.set_parent_death_signal(9)
            forkserver.name_self(b"isobox")  # a fork, not a server, to whoever lists processes
            self._leave_server()
            # Until a request comes: then it runs with what is copied so far.
            waiting = select.poll()
            waiting.register(channel.fileno(), select.POLLIN)
            prefault.populate(self.pages, stop=lambda: bool(waiting.poll(0)))
            msg, fds = forkserver.receive(channel, MAX_REQUEST, STDIO_AND_CWD + 1)
        except BaseException:
            os._exit(1)
        if len(fds) != STDIO_AND_CWD + 1:
            os._exit(1)  # the server let it go
        conn = socket.socket(fileno=fds.pop())
        self._worker(Request(msg), fds, conn, channel=channel)

    def _worker(self, request: Request, fds: list[int], conn: socket.socket, *,
                channel: socket.socket | None = None) -> None:
        """In the fork: become the caller's command, run it, report its
        exit code to the caller itself (the server's report, after this
        process is reaped, would come after its teardown), exit with it.
        A spare (``channel``) has left the server already, and sends it back
        the pages it came to own."""
        code = 1
        try:
            if channel is None:
                self._leave_server()
            become(request, fds)
            code = self.run(request.argv)
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            code = _finish(code)
            if channel is not None:  # first: its caller leaves on "exit", and the
                try:                 # server would then kill it before its report
                    channel.send(ENDING)
                except OSError:
                    pass
            try:
                conn.send(f"exit {code}".encode())
            except OSError:
                pass
            if channel is not None:
                _report_pages(channel)
            os._exit(code)


def _queued(channel: socket.socket) -> bool:
    """Whether a worker has sent anything on its channel."""
    try:
        return bool(channel.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def _report_pages(channel: socket.socket) -> None:
    try:
        from isobox.linux import prefault

        channel.send(prefault.owned_pages())
    except (OSError, ImportError):
        pass  # the next spare copies less ahead


def become(request: Request, fds: list[int]) -> None:
    """Take on the caller's stdio, working directory, environment, umask,
    rlimits and signal dispositions, as if this process were its own."""
    import _signal
    import resource

    from isobox.linux import identity

    identity.set_parent_death_signal(9)  # a server killed takes its commands along
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.umask(int(request.fields.get("umask") or "22", 8))
    for which, soft, hard in request.rlimits:
        if resource.getrlimit(which) != (soft, hard):
            resource.setrlimit(which, (soft, hard))
    os.environb.clear()
    os.environb.update(request.env)
    for sig in range(1, _signal.NSIG):
        if sig in (9, 19):
            continue
        try:
            if sig in request.ignored or sig in (13, 25):  # SIGPIPE, SIGXFSZ: as Python starts
                _signal.signal(sig, _signal.SIG_IGN)
            elif sig == 2:
                _signal.signal(sig, _signal.default_int_handler)
            else:
                _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            continue
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
    _standard_streams()
    sys.argv = list(request.argv)
    forkserver.name_self(b"isobox")


def _standard_streams() -> None:
    """New sys.stdin/stdout/stderr on the caller's fds, buffered as Python
    would buffer them at start-up (stdout line by line on a terminal only)."""
    sys.stdin = open(0, encoding="utf-8", errors="surrogateescape",  # noqa: SIM115
                     closefd=False)
    sys.stdout = open(1, "w", 1 if os.isatty(1) else -1, "utf-8",  # noqa: SIM115
                      "surrogateescape", closefd=False)
    sys.stderr = open(2, "w", 1, "utf-8", "backslashreplace", closefd=False)  # noqa: SIM115
    # What code that reaches past a replaced stream finds (click does).
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = (  # type: ignore[misc]
        sys.stdin, sys.stdout, sys.stderr)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _finish(code: int) -> int:
    """What the interpreter does at exit: non-daemon threads joined, atexit
    handlers run, output flushed (a closed pipe on stdout is exit 120)."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout and code == 0:
                code = 120
    return code


#: Loaded before the first fork: what the everyday commands import when
#: they run, below the CLI (a worker would load them anew each time).
WARM = ("isobox.engine.bundle", "isobox.engine.container_store", "isobox.engine.containers",
        "isobox.engine.images", "isobox.engine.logs", "isobox.engine.naming",
        "isobox.engine.networking", "isobox.engine.runspec", "isobox.engine.runspec_linux",
        "isobox.engine.userdb", "isobox.engine.views", "isobox.engine.vmspec",
        "isobox.engine.volumes", "isobox.engine.zygote", "isobox.cgroups", "isobox.cgroups._base",
        "isobox.images.snapshots", "isobox.linux.identity", "isobox.linux.prefault",
        "isobox.network.manager", "isobox.network.netlink", "isobox.shim.client",
        "isobox.shim.rootfs", "isobox.shim.zygote", "pyroute2", "json", "shutil", "sqlite3",
        "subprocess", "tarfile", "tty")


def warm_up(extra: tuple[str, ...] = ()) -> None:
    """Import WARM and ``extra`` (the caller's own), then build msgspec's
    type information for every Struct class loaded: it is made on a class's
    first decode and kept on the class, so made here once instead of in
    every worker (3-5 ms of a ``run``)."""
    import importlib

    import msgspec

    for name in (*WARM, *extra):
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional part this host lacks: loaded on use, or not
            print(f"isobox-cli-server: {name} not preloaded: {exc}", file=sys.stderr,
                  flush=True)
    for name, module in list(sys.modules.items()):
        if name == "isobox" or name.startswith("isobox."):
            for value in list(vars(module).values()):
                if (isinstance(value, type) and issubclass(value, msgspec.Struct)
                        and value is not msgspec.Struct):
                    try:
                        msgspec.json.Decoder(value)
                    except (TypeError, ValueError):
                        continue  # a generic or abstract base: primed through its users


def serve(path: str, keep: float, settings: str, run: Callable[[list[str]], int]) -> None:
    """Serve commands on ``path`` until ``keep`` idle seconds pass (never
    if negative), the socket is taken away or the code is stale; ``run``
    runs one command line (argv with the program name) and returns its
    exit code. Call :func:`warm_up` first."""
    import gc

    lock = forkserver.take_lock(forkserver.base_name(path) + ".lock")
    if lock is None:
        print("isobox-cli-server: another server holds the lock; exiting", file=sys.stderr,
              flush=True)
        return
    server = _Server(path, keep, settings, run, lock)
    forkserver.write_pid(path)
    # What was loaded stays put: a worker's collections then neither walk
    # nor copy these objects (CPython's gc.freeze, as pre-fork servers do).
    gc.collect()
    gc.freeze()
    server.serve()
