"""What a long-lived Python monitor (the shim, the guest agent) hands to the
children it forks: open stdio, and none of its own signal dispositions."""

from __future__ import annotations

import os
import signal

#: Dispositions a monitor changes (Python ignores SIGPIPE and SIGXFSZ; the
#: monitors handle SIGCHLD, SIGTERM... through a wakeup fd) and a container
#: must not inherit.
MONITOR_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                   signal.SIGPIPE, signal.SIGXFSZ)


def reset_signals() -> None:
    """In a fork of a monitor: no wakeup fd, default dispositions."""
    signal.set_wakeup_fd(-1)
    for sig in MONITOR_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def ensure_stdio() -> None:
    """0, 1 and 2 open, so no fd of ours ever lands on them (children inherit those)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
