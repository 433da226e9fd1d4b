"""Guards for a process that is switching into a container.

Once a runtime process has pivoted into (or joined) a container's mount
namespace, the paths on ``sys.path`` name the image's files: an import, or a
traceback that reads source lines, would load code from the image into a
process that still holds the host's privileges.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


class _RefuseImports:
    """A meta-path finder that refuses every import."""

    @staticmethod
    def find_spec(name: str, path: Sequence[str] | None = None,
                  target: Any = None) -> None:
        raise ImportError(f"import of {name!r} refused: this process is inside a container")


def block_imports() -> None:
    """From now on, any import in this process fails instead of reading files."""
    sys.meta_path.insert(0, _RefuseImports)  # type: ignore[arg-type]
    sys.path_importer_cache.clear()


def close_fds_except(keep: set[int], preserve: int = 0) -> None:
    """Close every fd but stdio, the ``preserve`` fds after it, and ``keep``.

    Runs before the switch, while /proc is still the host's."""
    first_free = 3 + preserve
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first_free and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own directory fd
