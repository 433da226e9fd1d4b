"""Exit codes and one-line errors as the task API reports them."""

from __future__ import annotations

import os

from isobox.errors import IsoboxError
from isobox.taskapi.protocol import EXIT_CANNOT_INVOKE, EXIT_FAILED, EXIT_NOT_FOUND

FAILURE_CODES = (EXIT_FAILED, EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND)


def exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit status, or 128+n for signal n."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def one_line(text: str) -> str:
    return " ".join(text.split())


def describe(exc: BaseException) -> str:
    """One line for an error: the strerror and file of an OSError, else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return one_line(text)


def classify(message: str, default: int = EXIT_FAILED) -> int:
    """Docker's code for a process that could not be started, from the
    runtime's message (as runc's callers read it): 127 not found, 126 not
    executable, else ``default`` (125 unless it is one of the three)."""
    text = message.lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return EXIT_NOT_FOUND
    if "permission denied" in text or "is a directory" in text:
        return EXIT_CANNOT_INVOKE
    return default if default in FAILURE_CODES else EXIT_FAILED


def failure_code(exc: BaseException) -> int:
    """The code of a refused request: the error's own 126/127, else 125."""
    code = exc.exit_code if isinstance(exc, IsoboxError) else EXIT_FAILED
    return code if code in FAILURE_CODES else EXIT_FAILED
