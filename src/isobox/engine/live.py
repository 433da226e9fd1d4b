"""What the engine reads of a container while it lives: its bundle's OCI
spec, its cgroup, its state."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from isobox.errors import Conflict, IsoboxError

if TYPE_CHECKING:
    from isobox.cgroups import Manager
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService

#: States in which the container's processes exist.
LIVE = ("running", "paused", "restarting")


def is_live(record: ContainerRecord) -> bool:
    return record.state["Status"] in LIVE


def require_running(record: ContainerRecord) -> None:
    """Docker's refusal for verbs that need the processes (top, exec...)."""
    if record.state["Status"] not in ("running", "paused") or not record.state.get("Pid"):
        raise Conflict(f"Container {record.id} is not running")


def spec_path(service: ContainerService, record: ContainerRecord) -> str:
    return os.path.join(service.dir(record.id), "bundle", "config.json")


def bundle_spec(service: ContainerService, record: ContainerRecord) -> dict[str, Any]:
    """The container's OCI spec (config.json); {} when it cannot be read."""
    try:
        with open(spec_path(service, record), "rb") as f:
            spec = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def cgroup(service: ContainerService, record: ContainerRecord) -> Manager | None:
    """The manager of the container's cgroup, or None (no cgroup named, or
    no cgroup filesystem)."""
    from isobox.cgroups import new_manager

    path = (bundle_spec(service, record).get("linux") or {}).get("cgroupsPath")
    if not path:
        return None
    try:
        return new_manager(str(path))
    except IsoboxError:
        return None


def pids(service: ContainerService, record: ContainerRecord) -> list[int]:
    """Every process in the container's cgroup (empty when it has none)."""
    manager = cgroup(service, record)
    if manager is None or not manager.exists():
        return []
    try:
        return manager.pids()
    except (OSError, IsoboxError):
        return []
