"""The build cache, keyed as Docker's classic builder keys it: the parent
image, the instruction (after substitution, with the build args a RUN
sees) and, for COPY/ADD, the checksums of the files brought in. A key maps
to the image the step made; a hit is used only while that image exists."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence

__all__ = ["BuildCache", "cache_key"]


def cache_key(parent: str, instruction: str, extra: Sequence[str] = ()) -> str:
    """A stable key: the same parent, text and sources give the same key."""
    raw = json.dumps([parent, instruction, list(extra)], separators=(",", ":"))
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()


class BuildCache:
    """key → image id, one small file a key under ``path`` (atomic writes)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get(self, key: str) -> str | None:
        try:
            with open(os.path.join(self.path, key), encoding="ascii") as f:
                value = f.read().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return value or None

    def put(self, key: str, image_id: str) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(image_id)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.path, key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
