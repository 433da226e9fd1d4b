"""The Engine API's prune endpoints with Docker's filters: each endpoint
accepts its own keys (any other is ``invalid filter 'KEY'``), ``until`` is a
timestamp, an RFC 3339 date or a duration ago (objects created before it
go), ``label=K``/``label=K=V`` must all match and ``label!=K``/``label!=K=V``
exclude what matches them all, as in Docker's ``daemon/prune.go``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from isobox.errors import InvalidArgument, IsoboxError, NotFound

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService
    from isobox.engine.images import ImageService
    from isobox.images.records import ImageRecord

CONTAINER_FILTERS = frozenset({"label", "label!", "until"})
IMAGE_FILTERS = frozenset({"dangling", "label", "label!", "until"})
NETWORK_FILTERS = frozenset({"label", "label!", "until"})
VOLUME_FILTERS = frozenset({"label", "label!", "all"})


@dataclass(frozen=True)
class PruneFilters:
    values: dict[str, list[str]] = field(default_factory=dict)
    until: float | None = None

    def labels_match(self, labels: Mapping[str, str] | None) -> bool:
        """Docker's matchLabels: every ``label`` matches, and not every ``label!``."""
        labels = labels or {}
        if not _match_kv(self.values.get("label", []), labels):
            return False
        excluded = self.values.get("label!", [])
        return not (excluded and _match_kv(excluded, labels))

    def created_before(self, created: float | None) -> bool:
        """True when ``until`` lets an object created at ``created`` go."""
        if self.until is None:
            return True
        return created is not None and created <= self.until

    def flag(self, key: str, default: bool) -> bool:
        """Docker's GetBoolOrDefault: ``1``/``true`` or ``0``/``false``."""
        if key not in self.values:
            return default
        given = {v.lower() for v in self.values[key]}
        true, false = bool(given & {"1", "true"}), bool(given & {"0", "false"})
        if true == false:
            raise InvalidArgument(f"invalid filter '{key}={','.join(self.values[key])}'")
        return true


def _match_kv(wanted: Iterable[str], labels: Mapping[str, str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def parse(filters: Mapping[str, list[str]], accepted: frozenset[str],
          now: float | None = None) -> PruneFilters:
    """Check the keys and read ``until`` (Docker's 400s for both)."""
    from isobox.engine.logs import parse_since

    for key in filters:
        if key not in accepted:
            raise InvalidArgument(f"invalid filter '{key}'")
    until = None
    if "until" in filters:
        values = filters["until"]
        if len(values) > 1:
            raise InvalidArgument("more than one until filter specified")
        text = values[0] if values else ""
        try:
            until = parse_since(text, now)
        except InvalidArgument:
            raise InvalidArgument(f"invalid value for 'until' filter: failed to parse value "
                                  f"as time or duration: {json.dumps(text)}") from None
    return PruneFilters({k: list(v) for k, v in filters.items()}, until)


def prune_containers(service: ContainerService, filters: PruneFilters
                     ) -> tuple[list[str], int]:
    """Stopped containers (created, exited, dead) that the filters let go."""
    removed, freed = [], 0
    for record in service.records(all_containers=True):
        if record.state["Status"] not in ("exited", "created", "dead"):
            continue
        if not (filters.created_before(record.created)
                and filters.labels_match(record.request.get("Labels"))):
            continue
        size = service.size(record.id)
        try:
            service.remove(record.id)
        except NotFound:
            continue  # removed meanwhile (another client, its --rm)
        removed.append(record.id)
        freed += size
    service.store.add_event("container", "prune", "", {"reclaimed": str(freed)})
    return removed, freed


def prune_images(images: ImageService, filters: PruneFilters) -> tuple[list[str], int]:
    """Dangling images (every unused one with ``dangling=false``)."""
    from isobox.engine.images import _epoch
    from isobox.oci import image_spec as spec

    dangling_only = filters.flag("dangling", True)

    def match(record: ImageRecord) -> bool:
        if filters.until is None and not filters.values.get("label") \
                and not filters.values.get("label!"):
            return True
        try:
            config = images.config_of(record)
        except (IsoboxError, OSError):
            return False
        created = _epoch(record.created)
        if not filters.created_before(record.added if created is None else created):
            return False
        return filters.labels_match((config.config or spec.ContainerConfig()).labels)

    return images.prune(all_images=not dangling_only, match=match)


def prune_networks(service: ContainerService, filters: PruneFilters) -> list[str]:
    """User networks without endpoints that the filters let go."""
    manager = service.networking.manager
    removed = []
    with manager.locked():
        for net in manager.networks():
            if net.predefined or manager.store.endpoints(net.id):
                continue
            if not (filters.created_before(net.created) and filters.labels_match(net.labels)):
                continue
            manager.remove_network(net.id)
            removed.append(net.name)
    return removed


def prune_volumes(service: ContainerService, filters: PruneFilters) -> tuple[list[str], int]:
    """Unused anonymous volumes (every unused one with ``all=true``)."""
    from isobox.engine.volume_ops import VolumeOps

    all_volumes = filters.flag("all", False)

    def match(info: dict[str, Any]) -> bool:
        return filters.labels_match(info.get("LabelsMap") or {})

    return VolumeOps(service).prune(all_volumes=all_volumes, match=match)
