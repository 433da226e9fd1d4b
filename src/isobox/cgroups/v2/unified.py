"""cgroup v2 raw settings: the spec's ``unified`` map, one interface file per key."""

from __future__ import annotations

import os

from isobox.cgroups import _fs
from isobox.errors import InvalidArgument, Unavailable


def apply(path: str, unified: dict[str, str]) -> None:
    """Write each ``{file: value}``; keys are plain file names such as "memory.high"."""
    for key, value in unified.items():
        if not key or "/" in key or key.startswith(".") or "\0" in key:
            raise InvalidArgument(f"invalid unified resource key {key!r}: must be a file name")
        if not _fs.exists(path, key):
            ctrl = key.partition(".")[0]
            raise Unavailable(f"cannot set unified resource {key}: {os.path.join(path, key)} "
                              f"does not exist (is the {ctrl!r} controller enabled?)")
        _fs.write(path, key, value)
