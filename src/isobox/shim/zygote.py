"""A shim launcher that is already warm: ``python -I -m isobox.shim.zygote SOCK``.

A caller starts one; each launch then costs a fork instead of a Python
start-up and the shim's and runtime's imports (about 50 ms of a container's
start), and the monitors it forks share its pages copy-on-write. The zygote
is single-threaded (a fork of a threaded process could inherit a lock held
by another thread) and does nothing else: it accepts a connection on SOCK
(mode 0600), receives the container directory and two fds (the ready pipe's
write end and the shim's stderr, over SCM_RIGHTS), forks, and the child runs
exactly what ``python -m isobox.shim D --ready-fd N`` runs. The child's own
first act is the shim's fork-and-exit, which the zygote reaps at once; the
shim is then nobody's child but init's, so the caller and the zygote may die
and restart without touching it (live restore).

Two kinds of owner:

- ``isoboxd`` runs one as its child (``isobox.engine.zygote.start``): it dies
  with the daemon.
- The CLI's is per root, shared and detached (``--keep IDLE``): the first
  command that launches a monitor starts it in the background (that launch
  itself goes the plain way), it holds ``NAME.lock`` (flock) for its life and
  writes its pid to ``NAME.pid`` (NAME: SOCK without ``.sock``), and it exits
  after IDLE seconds without a launch (never when IDLE is negative), when
  its socket is removed or replaced, or when it is **stale**: a request from
  another isobox installation (its package directory or Python differ), or
  any isobox module it has imported (or a package directory) changed on disk
  since it started. A stale zygote answers ``stale`` without forking, so the
  caller launches the plain way and starts a fresh zygote.

A request is ``DIR`` optionally followed by NUL-separated ``key=value``
fields: ``src`` and ``python`` (the caller's isobox package directory and
interpreter: checked), ``path``, ``umask`` and ``rlimits`` (``n:soft:hard``
items): what the shim would have inherited from the caller in a plain launch.
"""

from __future__ import annotations

import _socket as socket
import os
import signal
import sys

from isobox.linux import forkserver
from isobox.linux.forkserver import identity

__all__ = ["identity", "main", "parse_request", "serve"]

MAX_MESSAGE = 16384
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_request(msg: bytes) -> tuple[str, dict[str, str]]:
    """(container directory, fields) of a request."""
    head, *rest = msg.split(b"\0")
    fields = {}
    for item in rest:
        key, _, value = item.decode(errors="surrogateescape").partition("=")
        fields[key] = value
    return head.decode(errors="surrogateescape"), fields


def _prepare(fields: dict[str, str]) -> list[tuple[int, int, int]]:
    """In the zygote, before the fork: what a plain launch would have
    inherited from the caller. The environment (PATH alone, as launch()
    gives a shim) and the umask are set in the zygote itself, which needs
    neither, so that a child starts with them and dirties no page for them;
    the rlimits that differ from the zygote's come back for the child."""
    path = fields.get("path") or os.environ.get("PATH") or DEFAULT_PATH
    if len(os.environ) != 1 or os.environ.get("PATH") != path:
        os.environ.clear()
        os.environ["PATH"] = path
    if fields.get("umask", "").isdigit():
        os.umask(int(fields["umask"], 8))
    limits = []
    if fields.get("rlimits"):
        import resource

        for item in fields["rlimits"].split(","):
            try:
                which, soft, hard = (int(x) for x in item.split(":"))
                if resource.getrlimit(which) != (soft, hard):
                    limits.append((which, soft, hard))
            except (ValueError, OSError):
                continue
    return limits


def _apply_inherited(limits: list[tuple[int, int, int]]) -> None:
    """In the child: the rlimits :func:`_prepare` found different."""
    if limits:
        import resource

        for which, soft, hard in limits:
            try:
                resource.setrlimit(which, (soft, hard))
            except (ValueError, OSError):
                continue  # as much as this zygote may set


def _child(directory: str, ready_fd: int, stderr_fd: int, listener: socket.socket,
           limits: list[tuple[int, int, int]], lock: int | None = None) -> None:
    _leave_zygote(listener, lock)
    os.setsid()
    _become_monitor(directory, ready_fd, stderr_fd, limits, detached=False)


def _leave_zygote(listener: socket.socket, lock: int | None) -> None:
    listener.close()
    if lock is not None:
        # flock belongs to the open file: a monitor holding it would keep a
        # successor launcher out for as long as it lives.
        os.close(lock)


def _become_monitor(directory: str, ready_fd: int, stderr_fd: int,
                    limits: list[tuple[int, int, int]], *, detached: bool) -> None:
    # Each page this process writes is its own copy of the zygote's for as
    # long as the monitor lives: C calls here, not the Python wrappers of
    # signal.py or io, which touch many more objects.
    import _signal  # type: ignore[import-not-found]  # the C module, no stubs
    import gc

    forkserver.name_self(b"isobox-shim")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr_fd, 2)
    for fd in (null, stderr_fd):
        if fd > 2:
            os.close(fd)
    os.chdir("/")
    _apply_inherited(limits)
    for sig in (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_DFL)
    gc.enable()
    from isobox.shim.main import main

    code = main([directory, "--ready-fd", str(ready_fd)], detach=not detached)
    sys.stderr.flush()
    os._exit(code)


def _fork_spare(listener: socket.socket, lock: int | None) -> socket.socket:
    """A monitor forked ahead of the next launch, already detached (init's
    child, its own session): it waits on a socket pair for the request the
    zygote passes on, so a launch costs neither of the two forks (2-3 ms).
    Closing the zygote's end (or its death) sends it away."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            forkserver.name_self(b"isobox-shim")  # from its first moment: no listing takes it for a launcher
            ours.close()
            _leave_zygote(listener, lock)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _spare(theirs)
        finally:
            os._exit(1)
    theirs.close()
    os.waitpid(pid, 0)
    return ours


def _spare(channel: socket.socket) -> None:
    try:
        msg, fds = forkserver.receive(channel, MAX_MESSAGE, 2)
    except OSError:
        os._exit(0)
    channel.close()
    if len(fds) != 2:
        os._exit(0)  # the zygote let it go
    directory, fields = parse_request(msg)
    _become_monitor(directory, fds[0], fds[1], _prepare(fields), detached=True)


def _hand_to_spare(spare: socket.socket, msg: bytes, fds: list[int]) -> bool:
    try:
        forkserver.send(spare, msg, fds)
        return True
    except OSError:  # it died: fork as before
        return False
    finally:
        spare.close()


def _warm_runtime() -> None:
    """What a monitor would load after the fork: this host's cgroup manager,
    shutil, libseccomp (dlopen and its probes), the ascii codec, resource."""
    import encodings.ascii  # noqa: F401
    import resource  # noqa: F401
    import shutil  # noqa: F401

    from isobox import cgroups
    from isobox.errors import IsoboxError
    from isobox.linux import seccomp

    try:
        if cgroups.detect_version() == 2:
            import isobox.cgroups.v2.manager
        else:
            import isobox.cgroups.v1.manager  # noqa: F401
    except IsoboxError:
        pass
    try:
        seccomp._lib()
    except IsoboxError as exc:
        print(f"isobox-zygote: libseccomp not preloaded: {exc}", file=sys.stderr, flush=True)


def serve(path: str, keep: float | None = None) -> None:
    """Serve launches on ``path``. ``keep`` None: a child of its caller
    (isoboxd), which stops it. Else the CLI's detached zygote for a root:
    exits after ``keep`` idle seconds (never if negative) or when stale."""
    import gc
    import select
    import time

    # Warm: everything a shim and the built-in runtime import, once.
    import isobox.runtime.create
    import isobox.runtime.lifecycle
    import isobox.shim.logs
    import isobox.shim.main
    import isobox.shim.monitor
    import isobox.shim.rootfs
    import isobox.shim.runtimes
    import isobox.shim.server  # noqa: F401

    _warm_runtime()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    lock = None
    if keep is not None:
        lock = forkserver.take_lock(forkserver.base_name(path) + ".lock")
        if lock is None:
            print("isobox-zygote: another launcher holds the lock; exiting", file=sys.stderr,
                  flush=True)
            return
    listener, inode = forkserver.bind(path)
    stamp = forkserver.Stamp() if keep is not None else None
    mine = identity()
    if keep is not None:
        forkserver.write_pid(path)
    # Objects made so far stay put: the forked monitors then share their
    # pages with this process instead of copying them when the collector
    # walks them (CPython's gc.freeze, as Instagram's pre-fork servers).
    gc.collect()
    gc.freeze()
    gc.disable()
    print("ready", flush=True)
    last = time.monotonic()
    closing = False
    spare: socket.socket | None = None
    while True:
        if spare is None and not closing:
            spare = _fork_spare(listener, lock)
        if keep is not None:
            timeout = None if closing else 60.0
            if keep >= 0 and not closing:
                timeout = min(timeout or 60.0, max(0.0, last + keep - time.monotonic()))
            if closing:
                timeout = 0.0  # drain what is already queued, then go
            ready, _, _ = select.select([listener], [], [], timeout)
            if not ready:
                if closing:
                    break
                if not forkserver.ours(path, inode) or (keep >= 0 and time.monotonic() >= last + keep):
                    forkserver.retire(path, inode)
                    closing = True
                continue
        fd, _ = listener._accept()  # type: ignore[attr-defined]
        conn = socket.socket(fileno=fd)
        fds: list[int] = []
        try:
            msg, fds = forkserver.receive(conn, MAX_MESSAGE, 2)
            directory, fields = parse_request(msg)
            if len(fds) != 2 or not directory.startswith("/"):
                continue
            why = _stale(stamp, fields, mine)
            if why:
                conn.send(b"stale")
                print(f"isobox-zygote: stale: {why}; exiting", file=sys.stderr, flush=True)
                if not closing:
                    forkserver.retire(path, inode)
                    closing = True
                continue
            last = time.monotonic()
            handed, spare = spare is not None and _hand_to_spare(spare, msg, fds), None
            if not handed:
                limits = _prepare(fields)
                pid = os.fork()
                if pid == 0:
                    conn.close()
                    _child(directory, fds[0], fds[1], listener, limits, lock)
                os.waitpid(pid, 0)  # the child forks the shim and exits at once
            conn.send(b"ok")
        except OSError as exc:
            print(f"isobox-zygote: {exc}", file=sys.stderr, flush=True)
        finally:
            for received in fds:
                os.close(received)
            conn.close()
    if spare is not None:
        spare.close()  # it sees the end and exits
    listener.close()


def _stale(stamp: forkserver.Stamp | None, fields: dict[str, str],
           mine: tuple[str, str]) -> str:
    """Why this zygote must not serve the request ("" if it may)."""
    if stamp is None:
        return ""  # isoboxd's: it lives and dies with its daemon
    if "src" in fields and (fields["src"], fields.get("python", "")) != mine:
        return f"a request from {fields['src']} ({fields.get('python')})"
    changed = stamp.changed()
    return f"{changed} changed" if changed else ""


def main(argv: list[str]) -> int:
    keep: float | None = None
    if len(argv) == 3 and argv[0] == "--keep":
        try:
            keep = float(argv[1])
        except ValueError:
            argv = []
        argv = argv[2:]
    if len(argv) != 1:
        print("usage: python -I -m isobox.shim.zygote [--keep IDLE_SECONDS] SOCKET",
              file=sys.stderr)
        return 2
    serve(argv[0], keep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
