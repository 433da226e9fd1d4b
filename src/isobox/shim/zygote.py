"""A shim launcher that is already warm: ``python -I -m isobox.shim.zygote SOCK``.

A long-lived caller (``isoboxd``) starts one; each launch then costs a fork
instead of a Python start-up and the shim's and runtime's imports (about
30 ms of a container's start). The zygote is single-threaded (a fork of a
threaded daemon could inherit a lock held by another thread) and does
nothing else: it accepts a connection on SOCK (mode 0600), receives the
container directory and two fds (the ready pipe's write end and the shim's
stderr, over SCM_RIGHTS), forks, and the child runs exactly what
``python -m isobox.shim D --ready-fd N`` runs. The child's own first act is
the shim's fork-and-exit, which the zygote reaps at once; the shim is then
nobody's child but init's, so the daemon and the zygote may die and
restart without touching it (live restore).
"""

from __future__ import annotations

import _socket as socket
import array
import os
import signal
import sys

MAX_MESSAGE = 4096


def _receive(conn: socket.socket) -> tuple[str, list[int]]:
    fds = array.array("i")
    msg, ancdata, _, _ = conn.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(2 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg.decode(errors="surrogateescape"), list(fds)


def _child(directory: str, ready_fd: int, stderr_fd: int, listener: socket.socket) -> None:
    listener.close()
    os.setsid()
    with open("/proc/self/comm", "w") as comm:
        comm.write("isobox-shim")  # what ps shows (the command line stays the zygote's)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(stderr_fd, 2)
    for fd in (null, stderr_fd):
        if fd > 2:
            os.close(fd)
    os.chdir("/")
    path = os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    os.environ.clear()  # a shim's environment: PATH alone, as launch() gives it
    os.environ["PATH"] = path
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    from isobox.shim.main import main

    code = main([directory, "--ready-fd", str(ready_fd)])
    sys.stderr.flush()
    os._exit(code)


def serve(path: str) -> None:
    # Warm: everything a shim and the built-in runtime import, once.
    import isobox.runtime.create
    import isobox.runtime.lifecycle
    import isobox.shim.logs
    import isobox.shim.main
    import isobox.shim.monitor
    import isobox.shim.runtimes
    import isobox.shim.server  # noqa: F401

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    print("ready", flush=True)
    while True:
        fd, _ = listener._accept()  # type: ignore[attr-defined]
        conn = socket.socket(fileno=fd)
        fds: list[int] = []
        try:
            directory, fds = _receive(conn)
            if len(fds) != 2 or not directory.startswith("/"):
                continue
            pid = os.fork()
            if pid == 0:
                conn.close()
                _child(directory, fds[0], fds[1], listener)
            os.waitpid(pid, 0)  # the child forks the shim and exits at once
            conn.send(b"ok")
        except OSError as exc:
            print(f"isobox-zygote: {exc}", file=sys.stderr, flush=True)
        finally:
            for received in fds:
                os.close(received)
            conn.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -I -m isobox.shim.zygote SOCKET", file=sys.stderr)
        sys.exit(2)
    serve(sys.argv[1])
