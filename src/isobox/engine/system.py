"""``system df`` and ``system prune``: disk use of images, containers,
volumes and build cache, and removing what nothing uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isobox.engine.live import LIVE
from isobox.engine.volume_ops import VolumeOps, directory_size
from isobox.errors import IsoboxError

if TYPE_CHECKING:
    from isobox.engine.containers import ContainerService


@dataclass(frozen=True)
class Usage:
    type: str
    total: int
    active: int
    size: int
    reclaimable: int


@dataclass
class Pruned:
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    reclaimed: int = 0


def _image_usage(service: ContainerService) -> Usage:
    from isobox.images.chain import chain_ids

    images = service.images
    layer_size = {s.id: s.size for s in images.snapshots.list() if s.kind == "layer"}
    all_layers: set[str] = set()
    used_layers: set[str] = set()
    records = images.records.all()
    active = 0
    for record in records:
        try:
            chains = set(chain_ids(images.config_of(record).rootfs.diff_ids))
        except IsoboxError:
            continue
        all_layers |= chains
        if service.store.using_image(record.id):
            active += 1
            used_layers |= chains
    total = sum(layer_size.get(c, 0) for c in all_layers)
    used = sum(layer_size.get(c, 0) for c in used_layers)
    return Usage("Images", len(records), active, total, total - used)


def _container_usage(service: ContainerService) -> Usage:
    records = service.records(all_containers=True)
    sizes = {r.id: service.size(r.id) for r in records}
    live_ids = {r.id for r in records if r.state["Status"] in LIVE}
    return Usage("Containers", len(records), len(live_ids), sum(sizes.values()),
                 sum(s for cid, s in sizes.items() if cid not in live_ids))


def _volume_usage(service: ContainerService) -> Usage:
    ops = VolumeOps(service)
    users = ops.users()
    volumes = ops.volumes.all()
    sizes = {v["Name"]: directory_size(v["Mountpoint"]) for v in volumes}
    used = {name for name in sizes if users.get(name)}
    return Usage("Local Volumes", len(volumes), len(used), sum(sizes.values()),
                 sum(s for name, s in sizes.items() if name not in used))


def disk_usage(service: ContainerService) -> list[Usage]:
    return [_image_usage(service), _container_usage(service), _volume_usage(service),
            Usage("Build Cache", 0, 0, 0, 0)]


def prune(service: ContainerService, *, all_images: bool = False,
          volumes: bool = False) -> Pruned:
    """Stopped containers, then (with ``volumes``) unused anonymous volumes,
    then dangling images (every unused one with ``all_images``)."""
    out = Pruned()
    out.containers, freed = service.prune()
    out.reclaimed += freed
    service.store.add_event("container", "prune", "", {"reclaimed": str(freed)})
    if volumes:
        out.volumes, freed = VolumeOps(service).prune()
        out.reclaimed += freed
        service.store.add_event("volume", "prune", "", {"reclaimed": str(freed)})
    out.images, freed = service.images.prune(all_images=all_images)
    out.reclaimed += freed
    service.store.add_event("image", "prune", "", {"reclaimed": str(freed)})
    return out
