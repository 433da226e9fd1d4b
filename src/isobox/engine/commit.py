"""``commit``: a new image from a container, as Docker makes it: the base
image's layers, plus one layer holding the container's writable layer (OCI
whiteouts), and the container's configuration merged into the image's
(``--change`` instructions applied on top), with a history entry."""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from isobox.engine import layerdiff
from isobox.errors import InvalidArgument
from isobox.images.fstree import TarSink
from isobox.oci import image_spec as spec

if TYPE_CHECKING:
    from isobox.engine.api_types import ContainerConfig as RunConfig
    from isobox.engine.containers import ContainerService


def _image_config(merged: RunConfig) -> spec.ContainerConfig:
    health = None
    if merged.healthcheck is not None and merged.healthcheck.test:
        h = merged.healthcheck
        health = spec.HealthConfig(test=h.test, interval=h.interval or None,
                                   timeout=h.timeout or None,
                                   start_period=h.start_period or None,
                                   start_interval=h.start_interval or None,
                                   retries=h.retries or None)
    return spec.ContainerConfig(
        user=merged.user or None, exposed_ports=merged.exposed_ports or None,
        env=merged.env or None, entrypoint=merged.entrypoint or None, cmd=merged.cmd or None,
        volumes=merged.volumes or None, working_dir=merged.working_dir or None,
        labels=merged.labels or None, stop_signal=merged.stop_signal or None,
        on_build=merged.on_build or None, shell=merged.shell or None, healthcheck=health)


def commit(service: ContainerService, ref: str, *, repo: str | None = None,
           changes: Sequence[str] = (), message: str | None = None,
           author: str | None = None, pause: bool = True) -> str:
    """Commit the container; returns the new image id (``sha256:...``)."""
    from isobox.engine import api_types, runspec
    from isobox.images.builder import ImageAssembler, Layer, now_rfc3339, register
    from isobox.images.changes import apply_changes
    from isobox.oci import reference

    record = service.get(ref)
    if repo:
        parsed = reference.parse(repo)
        if parsed.digest:
            raise InvalidArgument(f"invalid reference format: {repo} (a digest cannot be "
                                  "committed to)")
    images = service.images
    base = images.records.get(record.image_id)
    base_config = images.config_of(base)
    base_manifest = images.manifest_of(base)
    merged = runspec.merge_config(api_types.decode_create(record.request), base_config)
    new_config = apply_changes(_image_config(merged), changes)

    assembler = ImageAssembler(images.store)
    for descriptor, diff_id in zip(base_manifest.layers, base_config.rootfs.diff_ids,
                                   strict=True):
        assembler.add_layer_blob(Layer(descriptor, diff_id, 0))
    entries = 0

    def write(tf: tarfile.TarFile) -> None:
        nonlocal entries
        sink = TarSink(tf=tf)
        with layerdiff.opened(service, record) as (upper, lowers):
            for node in layerdiff.layer_nodes(upper, lowers):
                sink.add(node)
        entries = sink.entries

    shim = service.shim(record) if pause and record.state["Status"] == "running" else None
    if shim is not None:
        shim.pause()
    try:
        layer = assembler.add_layer(write)
    finally:
        if shim is not None:
            shim.resume()
    if entries == 0:  # nothing changed: an empty history entry, no layer (as Docker)
        assembler.layers.pop()
    now = now_rfc3339()
    history = _base_history(base_config, len(base_manifest.layers))
    history.append(spec.History(created=now, author=author or None,
                                created_by=" ".join(merged.cmd or []),
                                comment=message or None, empty_layer=entries == 0 or None))
    config = msgspec.structs.replace(base_config, created=now, author=author or None,
                                     config=new_config)
    assembled = assembler.finish(config, history)
    size = base.size + (layer.size if entries else 0)
    assembled = type(assembled)(assembled.manifest_digest, assembled.config_digest, size,
                                assembled.created)
    image_id = register(images.records, assembled, [repo] if repo else [])
    images.ensure_unpacked(images.records.get(image_id))
    attrs = {"comment": message or "", "imageID": image_id,
             "imageRef": reference.parse(repo).familiar() if repo else ""}
    if author:
        attrs["author"] = author
    service.event(record, "commit", **attrs)
    return image_id


def _base_history(config: spec.ImageConfig, layers: int) -> list[spec.History]:
    """The base image's history, padded when it lists fewer layers than it has."""
    history = list(config.history or [])
    real = sum(1 for h in history if not h.empty_layer)
    history += [spec.History(created=config.created, created_by="")] * max(0, layers - real)
    if real > layers:
        raise InvalidArgument(f"base image history lists {real} layers, it has {layers}")
    return history
