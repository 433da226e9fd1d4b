"""Named volumes with the local driver: ``<root>/volumes/<name>/_data``.

A new volume mounted over a directory of the image is filled with that
directory's content on first use, as Docker does (unless ``nocopy``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Any

from isobox.errors import Conflict, InvalidArgument, NotFound
from isobox.linux.files import atomic_write

_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class VolumeService:
    def __init__(self, root: str) -> None:
        self.root = os.path.join(root, "volumes")
        os.makedirs(self.root, mode=0o701, exist_ok=True)

    def _dir(self, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f'create {name}: "{name}" includes invalid characters for a '
                                  'local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are '
                                  "allowed")
        return os.path.join(self.root, name)

    def create(self, name: str | None = None, *, labels: dict[str, str] | None = None,
               driver: str = "local", options: dict[str, str] | None = None,
               anonymous: bool = False) -> dict[str, Any]:
        if driver != "local":
            raise InvalidArgument(f"volume driver {driver!r} is not supported: use local")
        if options:
            raise InvalidArgument("the local driver takes no options here")
        if name is None:
            name = os.urandom(32).hex()
        path = self._dir(name)
        try:
            os.mkdir(path, 0o701)
        except FileExistsError:
            return self.inspect(name)
        os.mkdir(os.path.join(path, "_data"), 0o755)
        meta = {"Name": name, "Driver": "local", "Labels": labels or {},
                "CreatedAt": _rfc3339(time.time()), "Scope": "local", "Options": {},
                "Anonymous": anonymous}
        atomic_write(os.path.join(path, "meta.json"), json.dumps(meta).encode(), 0o600)
        return self.inspect(name)

    def inspect(self, name: str) -> dict[str, Any]:
        path = self._dir(name)
        try:
            with open(os.path.join(path, "meta.json"), "rb") as f:
                meta = json.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"get {name}: no such volume") from None
        meta.pop("Anonymous", None)
        meta["Mountpoint"] = os.path.join(path, "_data")
        return dict(meta)

    def data(self, name: str) -> str:
        return str(self.inspect(name)["Mountpoint"])

    def is_anonymous(self, name: str) -> bool:
        try:
            with open(os.path.join(self._dir(name), "meta.json"), "rb") as f:
                return bool(json.loads(f.read()).get("Anonymous"))
        except (OSError, ValueError):
            return False

    def all(self) -> list[dict[str, Any]]:
        out = []
        for name in sorted(os.listdir(self.root)):
            try:
                out.append(self.inspect(name))
            except (NotFound, InvalidArgument):
                continue
        return out

    def remove(self, name: str, *, users: list[str], force: bool = False) -> None:
        path = self._dir(name)
        if not os.path.isdir(path):
            if force:
                return
            raise NotFound(f"get {name}: no such volume")
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
        shutil.rmtree(path)

    def fill_from(self, name: str, source: str) -> None:
        """Copy an image directory into a new (empty) volume, keeping owners,
        modes and links; never follows a symlink of the image."""
        target = self.data(name)
        marker = os.path.join(self._dir(name), ".filled")
        if os.path.exists(marker) or os.listdir(target):
            return
        if os.path.isdir(source) and not os.path.islink(source):
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True,
                            copy_function=shutil.copy2)
            st = os.lstat(source)
            os.chown(target, st.st_uid, st.st_gid)
            os.chmod(target, st.st_mode & 0o7777)
        with open(marker, "w"):
            pass
