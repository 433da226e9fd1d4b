"""Volume commands over the container records: which containers use a
volume (their bundles' mounts, and the Binds and Mounts they asked for),
listing with Docker's filters, removal that refuses a volume in use, prune,
and the volume events."""

from __future__ import annotations

import os
import re
import stat
from typing import TYPE_CHECKING, Any

from isobox.engine import live
from isobox.engine.volumes import VolumeService
from isobox.errors import InvalidArgument, IsoboxError, NotFound

if TYPE_CHECKING:
    from collections.abc import Callable

    from isobox.engine.containers import ContainerService

_FILTERS = ("dangling", "name", "label", "driver")


class VolumeOps:
    def __init__(self, service: ContainerService) -> None:
        self.service = service
        self.volumes = VolumeService(service.config.root)

    def _event(self, action: str, name: str) -> None:
        self.service.store.add_event("volume", action, name, {"driver": "local"})

    def users(self) -> dict[str, list[str]]:
        """Volume name → ids of the containers that mount it."""
        from isobox.engine.api_types import parse_bind

        prefix = self.volumes.root.rstrip("/") + "/"
        out: dict[str, list[str]] = {}
        for record in self.service.store.all():
            names: set[str] = set()
            for m in live.bundle_spec(self.service, record).get("mounts") or []:
                source = str(m.get("source") or "")
                if source.startswith(prefix):
                    names.add(source[len(prefix):].split("/", 1)[0])
            host = record.request.get("HostConfig") or {}
            for bind in host.get("Binds") or []:
                try:
                    parsed = parse_bind(bind)
                except IsoboxError:
                    continue
                if parsed.kind != "bind" and parsed.source:
                    names.add(parsed.source)
            for m in host.get("Mounts") or []:
                if m.get("Type") == "volume" and m.get("Source"):
                    names.add(str(m["Source"]))
            for name in names:
                out.setdefault(name, []).append(record.id)
        return out

    def create(self, name: str | None, *, labels: dict[str, str] | None = None,
               driver: str = "local", options: dict[str, str] | None = None) -> dict[str, Any]:
        info = self.volumes.create(name or None, labels=labels, driver=driver,
                                   options=options)
        self._event("create", info["Name"])
        return info

    def inspect(self, name: str) -> dict[str, Any]:
        return self.volumes.inspect(name)

    def rows(self, filters: list[str]) -> list[dict[str, Any]]:
        parsed: list[tuple[str, str]] = []
        for item in filters:
            key, sep, value = item.partition("=")
            if not sep or key not in _FILTERS:
                raise InvalidArgument(f"invalid filter '{item}'")
            if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}'")
            parsed.append((key, value))
        users = self.users() if any(k == "dangling" for k, _ in parsed) else {}
        out = []
        for info in self.volumes.all():
            if all(_match(info, key, value, users) for key, value in parsed):
                labels = info.get("Labels") or {}
                out.append({**info, "Labels": ",".join(f"{k}={v}" for k, v in
                                                       sorted(labels.items())),
                            "LabelsMap": labels, "Links": "N/A", "Size": "N/A"})
        return out

    def remove(self, name: str, *, force: bool = False) -> None:
        users = self.users().get(name, [])
        self.volumes.remove(name, users=users, force=force)
        self._event("destroy", name)

    def prune(self, *, all_volumes: bool = False, filters: list[str] | None = None,
              match: Callable[[dict[str, Any]], bool] | None = None
              ) -> tuple[list[str], int]:
        """Remove unused volumes: anonymous ones only unless ``all_volumes``
        (Docker 23+), only those ``match`` accepts (a row of ``rows``) when
        given. Returns (names, bytes freed)."""
        users = self.users()
        removed, freed = [], 0
        keep = self.rows(list(filters or []))
        for info in keep:
            name = info["Name"]
            if users.get(name) or (not all_volumes and not self.volumes.is_anonymous(name)):
                continue
            if match is not None and not match(info):
                continue
            size = directory_size(info["Mountpoint"])
            try:
                self.remove(name)
            except (NotFound, IsoboxError):
                continue
            removed.append(name)
            freed += size
        return removed, freed


def _match(info: dict[str, Any], key: str, value: str, users: dict[str, list[str]]) -> bool:
    if key == "name":
        return re.search(value, info["Name"]) is not None
    if key == "driver":
        return bool(info.get("Driver") == value)
    if key == "label":
        labels = info.get("Labels") or {}
        k, sep, v = value.partition("=")
        return k in labels and (not sep or labels[k] == v)
    dangling = value.lower() in ("true", "1")
    return (not users.get(info["Name"])) == dangling


def directory_size(path: str) -> int:
    """Bytes of file content under ``path`` (hard links once), never following symlinks."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += 0 if stat.S_ISDIR(st.st_mode) else st.st_size
    return total
