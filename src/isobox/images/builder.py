"""Assemble an image in the content store: layers, then config and manifest.

The one way new images are made here (``import``, ``bootstrap``, and later
``commit`` and the Dockerfile builder)::

    asm = ImageAssembler(store)
    asm.add_layer_from_dir("/some/rootfs")          # or add_layer / _from_tar
    image = asm.finish(config, history)             # config + OCI manifest
    image_id = register(records, image, ["name:tag"])

New layers are stored gzip-compressed (reproducibly: no name, mtime 0) with
media type ``application/vnd.oci.image.layer.v1.tar+gzip``; their diff_id is
the sha256 of the uncompressed tar. The manifest is an OCI image manifest.
Nothing is visible under a name until ``register``: blobs alone are garbage
for GC to collect.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import msgspec

from isobox.errors import InvalidArgument
from isobox.images import compression
from isobox.images.compression import HashingWriter, StrictTarInfo
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords
from isobox.oci import image_spec as spec
from isobox.oci import reference as refs

__all__ = ["Assembled", "ImageAssembler", "Layer", "TarWriter", "now_rfc3339", "register"]

#: gzip level of layers made here (commit, build, import): 1 is 3-5x faster
#: than 6 for a few percent more bytes; Docker does not compress local layers
#: at all until a push.
LOCAL_LEVEL = 1

#: Writes the entries of one layer into an open tar stream.
TarWriter = Callable[[tarfile.TarFile], None]
_KEPT_XATTRS = ("security.capability",)


@dataclass(frozen=True)
class Layer:
    descriptor: spec.Descriptor  #: the stored blob
    diff_id: str                 #: sha256 of the uncompressed tar
    size: int                    #: bytes of the uncompressed tar


@dataclass(frozen=True)
class Assembled:
    manifest_digest: str
    config_digest: str           #: the image id
    size: int                    #: uncompressed layer bytes
    created: str | None


class ImageAssembler:
    """Collects layers for one image; ``finish`` writes config and manifest."""

    def __init__(self, store: ContentStore, *, tmpdir: str | None = None,
                 compresslevel: int = LOCAL_LEVEL) -> None:
        self.store = store
        self.tmpdir = tmpdir
        self.compresslevel = compresslevel
        self.layers: list[Layer] = []

    # -- layers ---------------------------------------------------------------

    def add_layer(self, write: TarWriter) -> Layer:
        """A layer whose entries ``write`` adds to a PAX tar stream."""
        return self._store_gzip(lambda sink: _write_tar(sink, write))

    def add_layer_from_dir(self, path: str, *, mtime: int | None = None,
                           owner: tuple[int, int] | None = None,
                           skip_contents: Sequence[str] = ()) -> Layer:
        """A layer holding the tree under ``path``, in sorted order, never
        following symlinks. ``mtime`` clamps newer times to it (reproducible
        builds); ``owner`` forces (uid, gid); the directories named in
        ``skip_contents`` (relative, e.g. ``"proc"``) are kept but empty."""
        if not os.path.isdir(path):
            raise InvalidArgument(f"not a directory: {path}")
        skip = {p.strip("/") for p in skip_contents}

        def write(tf: tarfile.TarFile) -> None:
            _walk(tf, path, "", mtime, owner, skip)

        return self.add_layer(write)

    def add_layer_from_tar(self, src: BinaryIO, *, what: str = "layer") -> Layer:
        """A layer from a tar stream, plain or gzip/bzip2/xz/zstd-compressed;
        checked to be a whole tar archive, stored gzip-compressed."""
        reader = compression.decompressed(src, what)
        return self._store_gzip(lambda sink: _copy_checked_tar(reader, sink, what))

    def add_layer_blob(self, layer: Layer) -> Layer:
        """A layer already in the store (a base image's)."""
        if not self.store.exists(layer.descriptor.digest):
            raise InvalidArgument(f"layer blob {layer.descriptor.digest} is not in the store")
        self.layers.append(layer)
        return layer

    def _store_gzip(self, produce: Callable[[HashingWriter], None]) -> Layer:
        with tempfile.TemporaryFile(dir=self.tmpdir) as tmp:
            compressed = HashingWriter(tmp)
            with compression.gzip_writer(compressed, self.compresslevel) as gz:
                plain = HashingWriter(gz)
                produce(plain)
            tmp.flush()
            tmp.seek(0)
            self.store.ingest_from(tmp, compressed.digest, compressed.size)  # type: ignore[arg-type]
        layer = Layer(spec.Descriptor(media_type=spec.OCI_LAYER_GZIP, digest=compressed.digest,
                                      size=compressed.size), plain.digest, plain.size)
        self.layers.append(layer)
        return layer

    # -- config and manifest --------------------------------------------------

    def finish(self, config: spec.ImageConfig,
               history: list[spec.History] | None = None) -> Assembled:
        """Store the config (its rootfs set from the layers added) and an OCI
        manifest. ``history``, when given, replaces the config's and must have
        one non-empty entry per layer."""
        if history is not None:
            real = sum(1 for h in history if not h.empty_layer)
            if history and real != len(self.layers):
                raise InvalidArgument(f"history has {real} layer entries for "
                                      f"{len(self.layers)} layers")
            config = msgspec.structs.replace(config, history=history or None)
        config = msgspec.structs.replace(
            config, rootfs=spec.RootFS(diff_ids=[layer.diff_id for layer in self.layers]))
        raw_config = spec.encode(config)
        config_digest = self.store.put(raw_config)
        manifest = spec.Manifest(
            schema_version=2, media_type=spec.OCI_MANIFEST,
            config=spec.Descriptor(media_type=spec.OCI_CONFIG, digest=config_digest,
                                   size=len(raw_config)),
            layers=[layer.descriptor for layer in self.layers])
        manifest_digest = self.store.put(spec.encode(manifest))
        return Assembled(manifest_digest, config_digest,
                         sum(layer.size for layer in self.layers), config.created)


def register(records: ImageRecords, image: Assembled, tags: Sequence[str] = ()) -> str:
    """Make an assembled image visible, under ``tags``; returns its id."""
    parsed = [refs.parse(tag) for tag in tags]
    for ref in parsed:
        if ref.digest is not None:
            raise InvalidArgument(f"cannot tag with a digest reference: {ref.familiar()}")
    records.add(image.config_digest, image.manifest_digest, image.created, image.size)
    for ref in parsed:
        records.tag(ref, image.config_digest, image.manifest_digest)
    return image.config_digest


def now_rfc3339() -> str:
    """The current UTC time as Docker writes it in image configs."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- tar helpers --------------------------------------------------------------

def _write_tar(sink: HashingWriter, write: TarWriter) -> None:
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape") as tf:
        write(tf)


def _copy_checked_tar(reader: compression.Reader, sink: HashingWriter, what: str) -> None:
    tee = _Tee(reader, sink)
    try:
        tf = tarfile.open(fileobj=tee, mode="r|", tarinfo=StrictTarInfo,  # type: ignore[call-overload]  # noqa: SIM115
                          encoding="utf-8", errors="surrogateescape")
    except tarfile.ReadError as exc:
        raise InvalidArgument(f"{what} is not a tar archive ({exc})") from None
    with tf:
        try:
            while tf.next() is not None:
                tf.members.clear()  # stream mode would keep every header
        except tarfile.TarError as exc:
            raise InvalidArgument(f"{what} is a corrupt tar archive ({exc})") from None
    while tee.read(compression.CHUNK):
        pass


class _Tee:
    def __init__(self, src: compression.Reader, sink: HashingWriter) -> None:
        self._src = src
        self._sink = sink

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        if data:
            self._sink.write(data)
        return data


def _walk(tf: tarfile.TarFile, root: str, rel: str, mtime: int | None,
          owner: tuple[int, int] | None, skip: set[str]) -> None:
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        arcname = f"{rel}/{entry.name}" if rel else entry.name
        info = tf.gettarinfo(entry.path, arcname=arcname)
        if info is None:  # a socket: not representable, as in Docker
            continue
        info.mtime = int(info.mtime) if mtime is None else min(int(info.mtime), mtime)
        info.uname = info.gname = ""
        if owner is not None:
            info.uid, info.gid = owner
        _add_xattrs(info, entry.path)
        if info.isreg():
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                tf.addfile(info, f)
        else:
            tf.addfile(info)
        if info.isdir() and not entry.is_symlink() and arcname not in skip:
            _walk(tf, root, arcname, mtime, owner, skip)


def _add_xattrs(info: tarfile.TarInfo, path: str) -> None:
    if info.issym() or info.islnk():
        return
    for name in _KEPT_XATTRS:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        info.pax_headers = {**info.pax_headers,
                            f"SCHILY.xattr.{name}": value.decode("utf-8", "surrogateescape")}
