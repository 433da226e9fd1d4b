"""Running a helper program (busybox's applets): argv only, no shell, a
timeout, and its stderr for the error message. ``os.posix_spawn`` rather than
``subprocess``, which costs the agent's start-up time to import."""

from __future__ import annotations

import os
import select
import signal
import time

from isobox.errors import IsoboxError, Unavailable
from isobox.linux.inherit import MONITOR_SIGNALS

TIMEOUT = 30.0
OUTPUT_MAX = 256  #: reads of up to 64 KiB kept of a command's output
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def run(argv: list[str], timeout: float = TIMEOUT) -> None:
    """Run argv to completion; IsoboxError with its last line of stderr if it fails."""
    _run(argv, timeout, keep_output=False)


def output(argv: list[str], timeout: float = TIMEOUT) -> bytes:
    """Run argv to completion; its output (stdout and stderr), or IsoboxError
    with the last line of it if it fails."""
    return _run(argv, timeout, keep_output=True)


def _run(argv: list[str], timeout: float, keep_output: bool) -> bytes:
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    r, w = os.pipe()
    try:
        try:
            pid = os.posix_spawn(argv[0], argv, ENV, setsigdef=MONITOR_SIGNALS,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, null, 0),
                                               (os.POSIX_SPAWN_DUP2, w if keep_output else null,
                                                1),
                                               (os.POSIX_SPAWN_DUP2, w, 2)])
        except OSError as exc:
            raise Unavailable(f"cannot run {argv[0]}: {exc.strerror}") from None
        os.close(w)
        w = -1
        errors, status = _collect(pid, r, timeout, OUTPUT_MAX if keep_output else 16)
    finally:
        for fd in (null, r, w):
            if fd >= 0:
                os.close(fd)
    what = " ".join(argv)
    if status is None:
        raise Unavailable(f"{what}: did not finish within {timeout:.0f}s")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        lines = errors.decode(errors="replace").strip().splitlines()
        raise IsoboxError(f"{what}: {lines[-1] if lines else f'exit status {code}'}")
    return errors


def _collect(pid: int, fd: int, timeout: float, chunks_max: int) -> tuple[bytes, int | None]:
    """What it writes until EOF (the first ``chunks_max`` reads), then its
    wait status; None if it ran too long (killed)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return b"".join(chunks), None
        if not poller.poll(int(left * 1000) + 1):
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        if len(chunks) < chunks_max:
            chunks.append(data)
    return b"".join(chunks), os.waitpid(pid, 0)[1]
