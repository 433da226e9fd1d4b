"""The one exception hierarchy. Libraries raise these; entry points map the
category to an exit code or an HTTP status."""

from __future__ import annotations


class IsoboxError(Exception):
    """Base of every error isobox raises on purpose."""

    #: Docker's CLI convention: 125 means the engine (or runtime) failed.
    exit_code = 125


class NotFound(IsoboxError):
    """A named thing (container, image, file, namespace) does not exist."""


class AlreadyExists(IsoboxError):
    """Creating something whose name or id is taken."""


class InvalidArgument(IsoboxError):
    """Input (a flag, a config field, a path) is malformed or not allowed."""


class Conflict(IsoboxError):
    """The operation does not fit the current state (e.g. delete a running container)."""


class NotRunning(Conflict):
    """The operation needs a running container."""


class Unavailable(IsoboxError):
    """A facility (kernel feature, binary, controller) is missing on this host."""


class CannotInvoke(IsoboxError):
    """The container's command exists but cannot be executed."""

    exit_code = 126


class CommandNotFound(IsoboxError):
    """The container's command does not exist."""

    exit_code = 127


def for_exit_code(message: str, exit_code: int = 125) -> IsoboxError:
    """The error a failed create or exec becomes, by Docker's exit code:
    127 command not found, 126 cannot invoke, anything else 125."""
    if exit_code == 127:
        return CommandNotFound(message)
    if exit_code == 126:
        return CannotInvoke(message)
    return IsoboxError(message)
