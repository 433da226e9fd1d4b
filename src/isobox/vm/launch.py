"""Starting QEMU for the keeper and the template maker: a child that dies
with its parent, whose only open descriptors are the ones it is given, and
waiting for the guest agent's first word."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import time

from isobox.errors import Unavailable
from isobox.linux import identity
from isobox.linux.guard import close_fds_except
from isobox.linux.loop import IN
from isobox.taskapi import frames
from isobox.vm.channel import Channel, ChannelClosed

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

_HIGH_FD = 100  #: targets are small numbers
_CHILD_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE,
                  signal.SIGWINCH)


def spawn(argv: list[str], fds: dict[int, int], stderr: int | None = None) -> int:
    """Fork and exec ``argv`` with ``fds`` ({number in QEMU: ours}) as its
    only descriptors besides /dev/null on 0 and 1 and ``stderr`` (else ours)
    on 2; its pid."""
    pid = os.fork()
    if pid != 0:
        return pid
    try:
        identity.set_parent_death_signal(signal.SIGKILL)  # never outlive the keeper
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        if stderr is not None:
            os.dup2(stderr, 2)
        # Out of the way first (above every target): a source may sit where
        # another target goes.
        moved = {target: fcntl.fcntl(source, fcntl.F_DUPFD, _HIGH_FD)
                 for target, source in fds.items()}
        for target, source in moved.items():
            os.dup2(source, target)  # dup2 makes it inheritable
        close_fds_except({0, 1, 2, *fds})
        for sig in _CHILD_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.execv(argv[0], argv)
    except BaseException as exc:
        os.write(2, f"isobox-vm: cannot run {argv[0]}: {exc}\n".encode())
    os._exit(127)


def wait_ready(channel: Channel, exited: Callable[[], bool], timeout: float,
               what: str = "the VM") -> bool:
    """Whether the agent said ``ready`` within ``timeout`` seconds; raises
    if QEMU exits first (``exited`` tells)."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(channel.fd, IN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if exited():
            raise Unavailable(f"QEMU exited while {what} was booting")
        if not poller.poll(int(min(left, 0.2) * 1000) + 1):
            continue
        try:
            received = channel.receive()
        except ChannelClosed:
            continue  # QEMU going away: ``exited`` tells
        for kind, _stream, payload in received:
            if kind == frames.EVENT and frames.decode_json(payload).get("event") == "ready":
                return True


def reap(pid: int, block: bool) -> int | None:
    """The wait status of ``pid`` once it has exited (None while it runs)."""
    try:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return 0
    return None if done == 0 else status


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
