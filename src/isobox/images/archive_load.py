"""``docker load``: Docker archives (``manifest.json``, legacy or Docker 25+)
and OCI image layouts (``index.json``) into the content store and records.

The archive (plain, gzip, bzip2, xz or zstd) is staged first (see
``archive_stage``), then every image in it is checked whole: each blob's
digest and size, each layer's diff_id against its config. Only when every
image passed does anything enter the store, and an image record is written
only after all its blobs are committed.

Layers are stored as they come: a Docker archive's uncompressed
``layer.tar`` stays an uncompressed blob (media type
``application/vnd.oci.image.layer.v1.tar``, digest == diff_id), an OCI
layout's gzip or zstd layer stays compressed. No recompression: loading is
I/O bound, and ``save`` writes them back unchanged. A Docker archive gets a
synthesised OCI manifest describing the stored blobs, unless the archive
(Docker 25+) carries an OCI manifest for exactly those blobs, which is kept
so the manifest digest survives a save/load round trip.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec

from isobox.errors import InvalidArgument
from isobox.images import compression
from isobox.images.archive_stage import DEFAULT_LIMITS, Limits, StagedArchive, StagedFile, stage
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords
from isobox.oci import digest as digests
from isobox.oci import image_spec as spec
from isobox.oci import reference as refs

__all__ = ["LoadedImage", "load"]

CONTAINERD_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class LoadedImage:
    id: str                  #: the config digest
    manifest: str            #: the stored manifest's digest
    tags: tuple[str, ...]    #: familiar names, e.g. ``busybox:latest``


class _DockerEntry(msgspec.Struct, rename="pascal"):
    config: str
    layers: list[str]
    repo_tags: list[str] | None = None


@dataclass
class _Plan:
    """One verified image: what to commit."""

    manifest_raw: bytes
    manifest_digest: str
    config_raw: bytes
    config_digest: str
    created: str | None
    blobs: list[tuple[StagedFile, str]]  # layer blobs and their digests, in order
    size: int                        # uncompressed layer bytes
    tags: list[refs.Reference] = field(default_factory=list)


def load(store: ContentStore, records: ImageRecords, src: BinaryIO, *,
         tmpdir: str | None = None, base_name: str | None = None,
         limits: Limits = DEFAULT_LIMITS) -> list[LoadedImage]:
    """Load every image of the archive read from ``src``.

    ``base_name`` names the repository for OCI layouts whose
    ``org.opencontainers.image.ref.name`` is a bare tag (like containerd's
    ``--base-name``); without it such images load untagged."""
    base = refs.parse(base_name, default_tag=False) if base_name else None
    reader = compression.decompressed(src, "archive")
    # Staged on the store's filesystem, so that blobs are linked, not copied.
    with stage(reader, tmpdir=tmpdir or store.ingest_dir, limits=limits) as staged:
        if staged.has("manifest.json"):
            plans = _docker_plans(staged)
        elif staged.has("index.json"):
            plans = _oci_plans(staged, base)
        else:
            raise InvalidArgument("not an image archive: it has neither manifest.json "
                                  "(Docker) nor index.json (OCI layout)")
        return [_commit(store, records, plan) for plan in plans]


def _commit(store: ContentStore, records: ImageRecords, plan: _Plan) -> LoadedImage:
    for blob, digest in plan.blobs:
        # Verified when staged (sha256 while writing, other digests by
        # staged.blob); the staged file is linked into the store, not copied.
        store.ingest_file(blob.path, digest, blob.size)
    store.put(plan.config_raw, plan.config_digest)
    manifest_digest = store.put(plan.manifest_raw, plan.manifest_digest)
    records.add(plan.config_digest, manifest_digest, plan.created, plan.size)
    for ref in plan.tags:
        records.tag(ref, plan.config_digest, manifest_digest)
    return LoadedImage(plan.config_digest, manifest_digest,
                       tuple(ref.familiar() for ref in plan.tags))


# -- Docker archives ------------------------------------------------------------

def _docker_plans(staged: StagedArchive) -> list[_Plan]:
    entries = spec.decode(staged.read_json("manifest.json"), list[_DockerEntry],
                          "manifest.json")
    if not entries:
        raise InvalidArgument("manifest.json lists no images")
    known = _index_manifests(staged) if staged.has("index.json") else {}
    plans: dict[str, _Plan] = {}
    for entry in entries:
        config_file = staged.file(entry.config)
        _check_blob_name(staged, config_file)
        config_raw = staged.read_json(entry.config)
        config = spec.decode_config(config_raw)
        diff_ids = config.rootfs.diff_ids
        if len(entry.layers) != len(diff_ids):
            raise InvalidArgument(f"image {entry.config}: manifest.json lists "
                                  f"{len(entry.layers)} layers, its config {len(diff_ids)}")
        blobs: list[tuple[StagedFile, str]] = []
        layers: list[spec.Descriptor] = []
        size = 0
        for path, diff_id in zip(entry.layers, diff_ids, strict=True):
            blob = staged.file(path)
            _check_blob_name(staged, blob)
            kind, usize = _check_diff_id(blob, diff_id)
            blobs.append((blob, blob.sha256))
            layers.append(spec.Descriptor(media_type=compression.layer_media_type(kind),
                                          digest=blob.sha256, size=blob.size))
            size += usize
        config_digest = config_file.sha256
        manifest_raw = _reusable(known.get(config_digest), layers) or spec.encode(spec.Manifest(
            schema_version=2, media_type=spec.OCI_MANIFEST,
            config=spec.Descriptor(media_type=spec.OCI_CONFIG, digest=config_digest,
                                   size=config_file.size),
            layers=layers))
        plan = plans.setdefault(config_digest, _Plan(
            manifest_raw, digests.of_bytes(manifest_raw), config_raw, config_digest,
            config.created, blobs, size))
        for tag in entry.repo_tags or []:
            ref = _tag_ref(tag)
            if ref not in plan.tags:
                plan.tags.append(ref)
    return list(plans.values())


def _index_manifests(staged: StagedArchive) -> dict[str, tuple[bytes, spec.Manifest]]:
    """The OCI manifests a Docker 25+ archive also carries, by config digest."""
    found: dict[str, tuple[bytes, spec.Manifest]] = {}
    index = spec.decode_index(staged.read_json("index.json"))
    for desc in index.manifests:
        if desc.media_type not in spec.MANIFEST_TYPES:
            continue
        raw = _read_blob_json(staged, desc)
        manifest = spec.decode_manifest(raw)
        found[manifest.config.digest] = (raw, manifest)
    return found


def _reusable(known: tuple[bytes, spec.Manifest] | None,
              layers: list[spec.Descriptor]) -> bytes | None:
    if known is None:
        return None
    raw, manifest = known
    same = [(d.digest, d.size, d.media_type) for d in manifest.layers] == [
        (d.digest, d.size, d.media_type) for d in layers]
    return raw if same else None


def _check_blob_name(staged: StagedArchive, blob: StagedFile) -> None:
    """A file named ``blobs/<algo>/<hex>`` must hold that digest."""
    parts = blob.name.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        staged.verify(blob, digests.validate(f"{parts[1]}:{parts[2]}"))


# -- OCI image layouts ----------------------------------------------------------

def _oci_plans(staged: StagedArchive, base: refs.Reference | None) -> list[_Plan]:
    if staged.has("oci-layout"):
        layout = spec.decode(staged.read_json("oci-layout"), dict[str, str], "oci-layout")
        if layout.get("imageLayoutVersion") != "1.0.0":
            raise InvalidArgument(f"unsupported OCI layout version "
                                  f"{layout.get('imageLayoutVersion')!r}")
    index = spec.decode_index(staged.read_json("index.json"))
    plans: dict[str, _Plan] = {}
    for desc in index.manifests:
        manifest_desc = _platform_manifest(staged, desc)
        if manifest_desc is None:
            continue
        plan = plans.get(manifest_desc.digest)
        if plan is None:
            plan = plans[manifest_desc.digest] = _oci_plan(staged, manifest_desc)
        for ref in _annotated_refs(desc.annotations or {}, base):
            if ref not in plan.tags:
                plan.tags.append(ref)
    if not plans:
        raise InvalidArgument("index.json lists no image manifest")
    return list(plans.values())


def _platform_manifest(staged: StagedArchive, desc: spec.Descriptor,
                       depth: int = 0) -> spec.Descriptor | None:
    """The image manifest ``desc`` leads to (through an index: this host's
    platform, or the only one); None for artifacts that are not images."""
    if desc.media_type in spec.MANIFEST_TYPES:
        return desc
    if desc.media_type not in spec.INDEX_TYPES:
        return None
    if depth > 2:
        raise InvalidArgument("image indexes nested too deep")
    index = spec.decode_index(_read_blob_json(staged, desc))
    images = [d for d in index.manifests if d.media_type in spec.MANIFEST_TYPES | spec.INDEX_TYPES]
    arch = _host_arch()
    chosen = [d for d in images if spec.platform_matches(d.platform, "linux", arch)]
    if not chosen and len(images) == 1:
        chosen = images
    if not chosen:
        raise InvalidArgument(f"image index {desc.digest} has no manifest for linux/{arch}")
    return _platform_manifest(staged, chosen[0], depth + 1)


def _oci_plan(staged: StagedArchive, desc: spec.Descriptor) -> _Plan:
    manifest_raw = _read_blob_json(staged, desc)
    manifest = spec.decode_manifest(manifest_raw)
    config_raw = _read_blob_json(staged, manifest.config)
    config = spec.decode_config(config_raw)
    diff_ids = config.rootfs.diff_ids
    if len(manifest.layers) != len(diff_ids):
        raise InvalidArgument(f"manifest {desc.digest} has {len(manifest.layers)} layers, "
                              f"its config {len(diff_ids)}")
    blobs: list[tuple[StagedFile, str]] = []
    size = 0
    for layer, diff_id in zip(manifest.layers, diff_ids, strict=True):
        if layer.media_type not in spec.LAYER_TYPES:
            raise InvalidArgument(f"layer {layer.digest} has unsupported media type "
                                  f"{layer.media_type!r}")
        blob = staged.blob(layer.digest, layer.size)
        size += _check_diff_id(blob, diff_id)[1]
        blobs.append((blob, layer.digest))
    return _Plan(manifest_raw, desc.digest, config_raw, manifest.config.digest, config.created,
                 blobs, size)


def _annotated_refs(annotations: dict[str, str],
                    base: refs.Reference | None) -> list[refs.Reference]:
    name = annotations.get(CONTAINERD_NAME)
    if name:
        return [_tag_ref(name)]
    ref_name = annotations.get(spec.ANNOTATION_REF_NAME)
    if not ref_name:
        return []
    if ":" in ref_name or "/" in ref_name:
        return [_tag_ref(ref_name)]
    if base is None:
        return []  # a bare tag and no repository to put it in
    return [_tag_ref(f"{base.name}:{ref_name}")]


# -- shared ---------------------------------------------------------------------

def _read_blob_json(staged: StagedArchive, desc: spec.Descriptor) -> bytes:
    if desc.size > staged.limits.max_json:
        raise InvalidArgument(f"blob {desc.digest} is too large for a manifest or config "
                              f"({desc.size} bytes)")
    blob = staged.blob(desc.digest, desc.size)
    return staged.read_json(blob.name)


def _check_diff_id(blob: StagedFile, diff_id: str) -> tuple[compression.Kind, int]:
    """(compression, uncompressed size) of a layer whose diff_id must match."""
    kind = compression.sniff(blob.path)
    compression.layer_media_type(kind)  # refuses bzip2 and xz layers
    if kind == "none":
        actual, size = blob.sha256, blob.size
    else:
        with open(blob.path, "rb") as f:
            actual, size = compression.digest_stream(
                compression.decompressed(f, f"layer {blob.name}"))
    if actual != diff_id:
        raise InvalidArgument(f"layer {blob.name}: its content has diff_id {actual}, "
                              f"the image config says {diff_id}")
    return kind, size


def _tag_ref(text: str) -> refs.Reference:
    ref = refs.parse(text)
    if ref.tag is None:
        raise InvalidArgument(f"image name {text!r} in the archive has no tag")
    return ref.with_tag(ref.tag)  # a digest next to the tag is not a name


def _host_arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
