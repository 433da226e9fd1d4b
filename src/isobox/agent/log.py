"""The agent's own diagnostics: the kernel log when it is PID 1 (it reaches
the console and survives in dmesg), stderr otherwise."""

from __future__ import annotations

import os

KMSG_LIMIT = 900  # /dev/kmsg takes one record of at most ~1 KiB per write
_fd = 2
_prefix = ""


def use_kmsg() -> None:
    global _fd, _prefix
    try:
        _fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
        _prefix = "<4>"  # warning: shown on the console at the default log level
    except OSError:
        pass


def fd() -> int:
    """Where the log goes (stderr, or /dev/kmsg)."""
    return _fd


def log(message: str) -> None:
    for line in message.splitlines() or [""]:
        try:
            os.write(_fd, f"{_prefix}isobox-agent: {line[:KMSG_LIMIT]}\n".encode())
        except OSError:
            pass


def log_exception(what: str) -> None:
    """A bug, not a refused request: the traceback goes to the log."""
    import traceback  # only when something went wrong

    log(f"{what}:\n{traceback.format_exc()}")
