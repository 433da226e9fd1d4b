"""The shim's own diagnostics: lines on its stderr, which is D/shim.log."""

from __future__ import annotations

import os

from isobox.shim.config import now


def log(message: str) -> None:
    try:
        os.write(2, f"{now()} isobox-shim[{os.getpid()}]: {message}\n".encode())
    except OSError:
        pass


def describe(exc: BaseException) -> str:
    """One line for an error: the strerror and file of an OSError, else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
