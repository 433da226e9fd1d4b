"""Loggers that import :mod:`logging` on first use.

logging costs ~5 ms to import and most runtime commands never log. Only for
host-side code: a process that already switched into a container must not
import anything (the import would read the container's files).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    import logging
    from typing import Any


class LazyLogger:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _logger(self) -> logging.Logger:
        import logging

        return logging.getLogger(self.name)

    def debug(self, msg: str, *args: object, **kw: Any) -> None:
        if "logging" in sys.modules:  # nobody configured logging: nothing to say
            self._logger().debug(msg, *args, **kw)

    def info(self, msg: str, *args: object, **kw: Any) -> None:
        if "logging" in sys.modules:
            self._logger().info(msg, *args, **kw)

    def warning(self, msg: str, *args: object, **kw: Any) -> None:
        self._logger().warning(msg, *args, **kw)

    def error(self, msg: str, *args: object, **kw: Any) -> None:
        self._logger().error(msg, *args, **kw)

    def handler_fds(self) -> list[int]:
        """fds of the configured log handlers (kept open across fd cleanups)."""
        if "logging" not in sys.modules:
            return []
        fds = []
        for handler in self._logger().root.handlers:
            stream = getattr(handler, "stream", None)
            try:
                fds.append(stream.fileno())  # type: ignore[union-attr]
            except (AttributeError, OSError, ValueError):
                continue
        return fds

    def debug_enabled(self) -> bool:
        """True only when logging is already loaded and set to debug; never imports."""
        return "logging" in sys.modules and bool(self._logger().isEnabledFor(10))


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
