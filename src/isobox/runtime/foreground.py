"""Waiting on a container process from the terminal: signals forwarded,
and with a tty, the pty proxied to our own stdio."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import termios
import tty
from collections.abc import Iterator

from isobox.linux import console

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def forwarding(pid: int) -> Iterator[None]:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait(pid: int, master: int | None = None) -> int:
    """Wait for pid (our child, or reparented to us as subreaper)."""
    with forwarding(pid):
        if master is not None:
            _proxy(pid, master)
        _, status = os.waitpid(pid, 0)
    return exit_code(status)


def _proxy(pid: int, master: int) -> None:
    pidfd = os.pidfd_open(pid)
    raw_mode = os.isatty(0)
    saved = termios.tcgetattr(0) if raw_mode else None

    def resize(_signum: int = 0, _frame: object = None) -> None:
        with contextlib.suppress(OSError):
            console.set_size(master, *console.get_size(0))

    previous = signal.signal(signal.SIGWINCH, resize) if raw_mode else None
    try:
        if raw_mode:
            tty.setraw(0)
            resize()
        inputs = [master, pidfd, 0]
        while True:
            try:
                ready, _, _ = select.select(inputs, [], [])
            except InterruptedError:
                continue
            if master in ready and not _copy(master, 1):
                break
            if 0 in ready:
                data = _read(0)
                if data:
                    os.write(master, data)
                else:
                    inputs.remove(0)
            if pidfd in ready:
                os.set_blocking(master, False)
                while _copy(master, 1):
                    pass
                break
    finally:
        os.close(pidfd)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if previous is not None:
            signal.signal(signal.SIGWINCH, previous)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno == errno.EIO:  # the slave side closed
            return b""
        raise


def _copy(src: int, dst: int) -> bool:
    data = _read(src)
    if not data:
        return False
    view = memoryview(data)
    while view:
        view = view[os.write(dst, view):]
    return True
