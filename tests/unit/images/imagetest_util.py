"""Helpers for the image tests: in-memory tars, hand-made Docker archives and
OCI layouts, and fresh stores."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def new_store(base: Path, name: str = "store") -> tuple[ContentStore, ImageRecords]:
    return ContentStore(str(base / name)), ImageRecords(str(base / f"{name}.db"))


def assert_untouched(store: ContentStore, records: ImageRecords) -> None:
    """No image, no blob, no ingest left behind."""
    assert records.all() == []
    assert list(store.digests()) == []
    assert os.listdir(os.path.join(store.root, "ingest")) == []


class TarBuilder:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def file(self, name: str, data: bytes, mode: int = 0o644) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        self.tf.addfile(info, io.BytesIO(data))
        return self

    def dir(self, name: str) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.tf.addfile(info)
        return self

    def link(self, name: str, target: str, *, hard: bool = False) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = target
        self.tf.addfile(info)
        return self

    def device(self, name: str) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        self.tf.addfile(info)
        return self

    def json(self, name: str, doc: Any) -> TarBuilder:
        return self.file(name, json.dumps(doc).encode())

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def layer(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar holding ``files``."""
    builder = TarBuilder()
    for name, data in sorted(files.items()):
        builder.file(name, data)
    return builder.bytes()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def config(diff_ids: list[str], **extra: Any) -> bytes:
    doc = {"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
           "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
           **extra}
    return json.dumps(doc).encode()


def legacy_docker_archive(layers: list[bytes], tags: list[str] | None,
                          *, dedup_symlink: bool = True) -> tuple[bytes, str]:
    """A Docker <= 24 ``docker save`` archive: ``<id>/layer.tar``, ``<id>/json``,
    ``<config hex>.json``, manifest.json and repositories. A repeated layer is
    a symlink to the first copy, as Docker writes it. Returns (tar, image id)."""
    cfg = config([sha(data) for data in layers])
    cfg_hex = sha(cfg)[7:]
    builder = TarBuilder()
    paths, seen = [], {}
    for i, data in enumerate(layers):
        v1 = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
        builder.dir(v1).file(f"{v1}/VERSION", b"1.0").json(f"{v1}/json", {"id": v1})
        if dedup_symlink and sha(data) in seen:
            builder.link(f"{v1}/layer.tar", f"../{seen[sha(data)]}/layer.tar")
        else:
            builder.file(f"{v1}/layer.tar", data)
            seen[sha(data)] = v1
        paths.append(f"{v1}/layer.tar")
    builder.file(f"{cfg_hex}.json", cfg)
    builder.json("manifest.json", [{"Config": f"{cfg_hex}.json", "RepoTags": tags,
                                    "Layers": paths}])
    if tags:
        builder.json("repositories", {"busybox": {"latest": paths[-1].split("/")[0]}})
    return builder.bytes(), "sha256:" + cfg_hex


def oci_layout(layers: list[bytes], annotations: list[dict[str, str] | None], *,
               compress: bool = True, extra: dict[str, bytes] | None = None,
               media_type: str | None = None) -> tuple[bytes, str, str]:
    """An OCI image layout tar with one image (gzip layers by default), listed
    once per entry of ``annotations``. Returns (tar, image id, manifest digest)."""
    blobs: dict[str, bytes] = {}
    descs = []
    for data in layers:
        blob = gz(data) if compress else data
        blobs[sha(blob)] = blob
        descs.append({"mediaType": media_type or ("application/vnd.oci.image.layer.v1.tar+gzip"
                                                  if compress else
                                                  "application/vnd.oci.image.layer.v1.tar"),
                      "digest": sha(blob), "size": len(blob)})
    cfg = config([sha(data) for data in layers])
    blobs[sha(cfg)] = cfg
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(cfg), "size": len(cfg)},
        "layers": descs}).encode()
    blobs[sha(manifest)] = manifest
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), **({"annotations": a} if a else {})} for a in annotations]}
    builder = TarBuilder().json("oci-layout", {"imageLayoutVersion": "1.0.0"})
    builder.json("index.json", index).dir("blobs").dir("blobs/sha256")
    for digest, blob in {**blobs, **(extra or {})}.items():
        builder.file(f"blobs/sha256/{digest[7:]}", blob)
    return builder.bytes(), sha(cfg), sha(manifest)
