"""Image archives: ``docker save`` and ``docker load``.

``save(format="docker")`` writes what Docker 25+ writes, which every loader
reads: an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``) plus
Docker's ``manifest.json`` and ``repositories`` pointing into it. Layers are
uncompressed tars named by their diff_id (``docker load`` checks them against
the config's ``rootfs.diff_ids``); stored gzip or zstd layers are
decompressed on the way out. So Docker 20.10 (which reads only
``manifest.json``), Docker 25+, skopeo's ``docker-archive:`` and
``oci-archive:`` transports and containerd all load it.

``save(format="oci")`` writes the OCI layout alone with the blobs exactly as
stored (compressed layers stay compressed, manifest digests are kept).

The archive is streamed to ``out`` (tarfile stream mode); nothing is built
in memory but the small JSON documents. ``load`` is in ``archive_load``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from typing import BinaryIO, Literal

import msgspec

from isobox.errors import InvalidArgument, NotFound
from isobox.images import compression
from isobox.images.archive_load import CONTAINERD_NAME, LoadedImage, load
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecord, ImageRecords
from isobox.oci import digest as digests
from isobox.oci import image_spec as spec
from isobox.oci import reference as refs

__all__ = ["Format", "LoadedImage", "load", "save"]

Format = Literal["docker", "oci"]
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_UNCOMPRESSED = frozenset({spec.OCI_LAYER,
                           "application/vnd.oci.image.layer.nondistributable.v1.tar"})


class _DockerEntry(msgspec.Struct, rename="pascal"):
    config: str
    repo_tags: list[str] | None
    layers: list[str]


def save(store: ContentStore, records: ImageRecords, refs_or_ids: Sequence[str],
         out: BinaryIO, *, format: Format = "docker") -> None:
    """Write the images named (by reference, repository, or id) to ``out``."""
    if format not in ("docker", "oci"):
        raise InvalidArgument(f"unknown archive format {format!r}: want docker or oci")
    selected = _select(records, refs_or_ids)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        writer = _Writer(tf, store)
        index: list[spec.Descriptor] = []
        entries: list[_DockerEntry] = []
        repositories: dict[str, dict[str, str]] = {}
        for record, tags in selected:
            if format == "docker":
                desc, paths = writer.docker_image(record)
                entries.append(_DockerEntry(
                    config=paths[0], repo_tags=[t.familiar() for t in tags] or None,
                    layers=paths[1:]))
                for tag in tags:
                    top = paths[-1].rpartition("/")[2] if len(paths) > 1 else ""
                    repositories.setdefault(tag.familiar_name, {})[tag.tag or ""] = top
            else:
                desc = writer.oci_image(record)
            index += [msgspec.structs.replace(desc, annotations={
                CONTAINERD_NAME: str(tag), spec.ANNOTATION_REF_NAME: tag.tag or ""})
                for tag in tags] or [desc]
        writer.file("index.json", spec.encode(spec.Index(
            schema_version=2, media_type=spec.OCI_INDEX, manifests=index)))
        if format == "docker":
            writer.file("manifest.json", msgspec.json.encode(entries))
        writer.file("oci-layout", OCI_LAYOUT)
        if format == "docker":
            writer.file("repositories", msgspec.json.encode(repositories))


def _select(records: ImageRecords, names: Sequence[str]
            ) -> list[tuple[ImageRecord, list[refs.Reference]]]:
    """The images to save, in order, each with the tags to save it under:
    the tag named, every tag of a repository named without one, none for an id."""
    if not names:
        raise InvalidArgument("save needs at least one image")
    chosen: dict[str, tuple[ImageRecord, list[refs.Reference]]] = {}
    for name in names:
        for record, tag in _resolve(records, name):
            _, tags = chosen.setdefault(record.id, (record, []))
            if tag is not None and tag not in tags:
                tags.append(tag)
    return list(chosen.values())


def _resolve(records: ImageRecords, name: str
             ) -> list[tuple[ImageRecord, refs.Reference | None]]:
    record = None
    try:
        record = records.lookup(name)
    except NotFound:
        pass
    body = name[7:] if name.startswith("sha256:") else name
    if record is not None and refs.looks_like_id(name) and record.id[7:].startswith(body):
        return [(record, None)]
    try:
        ref = refs.parse(name, default_tag=False)
    except InvalidArgument:
        raise NotFound(f"No such image: {name}") from None
    if ref.digest is not None:
        if record is None:
            raise NotFound(f"No such image: {name}")
        return [(record, None)]
    if ref.tag is not None:
        if record is None:
            raise NotFound(f"No such image: {name}")
        return [(record, ref)]
    found: list[tuple[ImageRecord, refs.Reference | None]] = []  # a repository: all its tags
    for image in records.all():
        for text, _ in records.names_of(image.id):
            tagged = refs.parse(text, default_tag=False)
            if tagged.name == ref.name and tagged.tag is not None and tagged.digest is None:
                found.append((image, tagged))
    if not found:
        raise NotFound(f"No such image: {name}")
    return found


class _Writer:
    """Adds blobs and files to the output tar, each blob once."""

    def __init__(self, tf: tarfile.TarFile, store: ContentStore) -> None:
        self.tf = tf
        self.store = store
        self.written: set[str] = set()
        self._plain_sizes: dict[str, int] = {}  # diff_id -> uncompressed size
        self._dir("blobs")

    def docker_image(self, record: ImageRecord) -> tuple[spec.Descriptor, list[str]]:
        """Config, uncompressed layers and an OCI manifest for them; returns the
        manifest's descriptor and the archive paths of config and layers."""
        raw, manifest, config_raw, config = self._read(record)
        layers = [self._plain_layer(desc, diff_id)
                  for desc, diff_id in zip(manifest.layers, config.rootfs.diff_ids, strict=True)]
        config_desc = manifest.config
        if not all(d.media_type in _UNCOMPRESSED and d.digest == diff_id
                   for d, diff_id in zip(manifest.layers, config.rootfs.diff_ids, strict=True)):
            config_desc = spec.Descriptor(media_type=spec.OCI_CONFIG,
                                          digest=manifest.config.digest, size=len(config_raw))
            raw = spec.encode(spec.Manifest(schema_version=2, media_type=spec.OCI_MANIFEST,
                                            config=config_desc, layers=layers))
        config_path = self.blob_bytes(config_raw, config_desc.digest)
        self.blob_bytes(raw, digests.of_bytes(raw))
        desc = spec.Descriptor(media_type=spec.media_type_of(raw), digest=digests.of_bytes(raw),
                               size=len(raw))
        return desc, [config_path, *(_blob_path(d.digest) for d in layers)]

    def oci_image(self, record: ImageRecord) -> spec.Descriptor:
        """The stored manifest, config and layer blobs, unchanged."""
        raw, manifest, config_raw, _ = self._read(record)
        for layer in manifest.layers:
            self._stored_blob(layer.digest)
        self.blob_bytes(config_raw, manifest.config.digest)
        self.blob_bytes(raw, record.manifest)
        return spec.Descriptor(media_type=spec.media_type_of(raw), digest=record.manifest,
                               size=len(raw))

    def _read(self, record: ImageRecord
              ) -> tuple[bytes, spec.Manifest, bytes, spec.ImageConfig]:
        raw = self.store.read(record.manifest)
        if spec.media_type_of(raw) not in spec.MANIFEST_TYPES:
            raise InvalidArgument(f"image {record.id}: {record.manifest} is not an image manifest")
        manifest = spec.decode_manifest(raw)
        config_raw = self.store.read(manifest.config.digest)
        config = spec.decode_config(config_raw)
        if len(config.rootfs.diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"image {record.id}: manifest and config disagree on "
                                  "the number of layers")
        return raw, manifest, config_raw, config

    def _plain_layer(self, desc: spec.Descriptor, diff_id: str) -> spec.Descriptor:
        path = _blob_path(diff_id)
        if desc.digest == diff_id:  # stored uncompressed
            size = self.store.size(desc.digest)
            if path not in self.written:
                with self.store.open(desc.digest) as f:
                    self._add(path, size, f)
        elif diff_id in self._plain_sizes:
            size = self._plain_sizes[diff_id]
        else:
            # Two passes: the tar header needs the size before the data.
            with self.store.open(desc.digest) as f:
                actual, size = compression.digest_stream(compression.decompressed(f, "layer"))
            if actual != diff_id:
                raise InvalidArgument(f"stored layer {desc.digest} does not match its "
                                      f"diff_id {diff_id} (got {actual})")
            if path not in self.written:
                with self.store.open(desc.digest) as f:
                    self._add(path, size, compression.decompressed(f, "layer"))
            self._plain_sizes[diff_id] = size
        return spec.Descriptor(media_type=spec.OCI_LAYER, digest=diff_id, size=size)

    def _stored_blob(self, digest: str) -> None:
        path = _blob_path(digest)
        if path not in self.written:
            with self.store.open(digest) as f:
                self._add(path, self.store.size(digest), f)

    def blob_bytes(self, data: bytes, digest: str) -> str:
        path = _blob_path(digest)
        if path not in self.written:
            self._add(path, len(data), io.BytesIO(data))
        return path

    def file(self, name: str, data: bytes) -> None:
        self._add(name, len(data), io.BytesIO(data))

    def _add(self, path: str, size: int, src: compression.Reader) -> None:
        directory = path.rpartition("/")[0]
        if directory and directory not in self.written:
            self._dir(directory)
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = size, 0o644, 0
        self.tf.addfile(info, src)  # type: ignore[arg-type]
        self.written.add(path)

    def _dir(self, path: str) -> None:
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
        self.tf.addfile(info)
        self.written.add(path)


def _blob_path(digest: str) -> str:
    algo, hexpart = digests.parse(digest)
    return f"blobs/{algo}/{hexpart}"
