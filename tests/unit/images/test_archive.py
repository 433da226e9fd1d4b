"""save and load: round trips, Docker's legacy archives, OCI layouts."""

from __future__ import annotations

import bz2
import io
import json
import lzma
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from imagetest_util import (
    TarBuilder,
    gz,
    layer,
    legacy_docker_archive,
    new_store,
    oci_layout,
    sha,
)

from isobox.errors import InvalidArgument, NotFound
from isobox.images import archive
from isobox.images.bootstrap import bootstrap_busybox
from isobox.images.content import ContentStore
from isobox.images.records import ImageRecords
from isobox.oci import image_spec as spec
from isobox.oci import reference as refs

needs_busybox = pytest.mark.skipif(shutil.which("busybox") is None,
                                   reason="needs the host's busybox (busybox-static)")


@pytest.fixture(scope="module")
def busybox_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContentStore, ImageRecords, str]:
    if shutil.which("busybox") is None:
        pytest.skip("needs the host's busybox (busybox-static)")
    store, records = new_store(tmp_path_factory.mktemp("bb"))
    image_id = bootstrap_busybox(store, records, ref="busybox:latest")
    records.tag(refs.parse("example.com/team/box:1.0"), image_id)
    return store, records, image_id


def _save(store: ContentStore, records: ImageRecords, names: list[str],
          fmt: archive.Format = "docker") -> bytes:
    out = io.BytesIO()
    archive.save(store, records, names, out, format=fmt)
    return out.getvalue()


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]


def _layers_of(store: ContentStore, manifest_digest: str) -> list[spec.Descriptor]:
    return spec.decode_manifest(store.read(manifest_digest)).layers


@needs_busybox
def test_docker_round_trip_keeps_id_tags_and_verified_layers(
        busybox_store: tuple[ContentStore, ImageRecords, str], tmp_path: Path) -> None:
    store, records, image_id = busybox_store
    data = _save(store, records, ["busybox:latest", "example.com/team/box:1.0"])
    members = _members(data)
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= set(members)
    (entry,) = json.loads(members["manifest.json"])
    assert entry["RepoTags"] == ["busybox:latest", "example.com/team/box:1.0"]
    cfg = spec.decode_config(members[entry["Config"]])
    # Layers are uncompressed and named by their diff_id, as docker load wants.
    for path, diff_id in zip(entry["Layers"], cfg.rootfs.diff_ids, strict=True):
        assert path == f"blobs/sha256/{diff_id[7:]}"
        assert sha(members[path]) == diff_id
    repos = json.loads(members["repositories"])
    assert repos["busybox"]["latest"] == cfg.rootfs.diff_ids[-1][7:]

    store2, records2 = new_store(tmp_path)
    (loaded,) = archive.load(store2, records2, io.BytesIO(data))
    assert loaded.id == image_id
    assert loaded.tags == ("busybox:latest", "example.com/team/box:1.0")
    assert records2.lookup("busybox").id == image_id
    layers = _layers_of(store2, loaded.manifest)
    assert [d.media_type for d in layers] == [spec.OCI_LAYER]
    assert [d.digest for d in layers] == cfg.rootfs.diff_ids
    assert all(store2.exists(d.digest) for d in layers)
    # Saving what was loaded gives the same archive, byte for byte.
    assert _save(store2, records2, ["busybox:latest", "example.com/team/box:1.0"]) == data


@needs_busybox
def test_save_is_deterministic_and_by_id_has_no_tags(
        busybox_store: tuple[ContentStore, ImageRecords, str]) -> None:
    store, records, image_id = busybox_store
    first = _save(store, records, [image_id[7:19]])
    assert first == _save(store, records, [image_id])
    (entry,) = json.loads(_members(first)["manifest.json"])
    assert entry["RepoTags"] is None
    index = json.loads(_members(first)["index.json"])
    assert "annotations" not in index["manifests"][0]


@needs_busybox
def test_save_repository_name_saves_all_its_tags(
        busybox_store: tuple[ContentStore, ImageRecords, str]) -> None:
    store, records, image_id = busybox_store
    records.tag(refs.parse("example.com/team/box:2.0"), image_id)
    try:
        (entry,) = json.loads(_members(_save(store, records, ["example.com/team/box"]))
                              ["manifest.json"])
        assert entry["RepoTags"] == ["example.com/team/box:1.0", "example.com/team/box:2.0"]
    finally:
        records.untag(refs.parse("example.com/team/box:2.0"))


@needs_busybox
def test_oci_format_keeps_stored_blobs_and_manifest_digest(
        busybox_store: tuple[ContentStore, ImageRecords, str], tmp_path: Path) -> None:
    store, records, image_id = busybox_store
    data = _save(store, records, ["busybox"], "oci")
    members = _members(data)
    assert "manifest.json" not in members
    index = json.loads(members["index.json"])
    (desc,) = index["manifests"]
    assert desc["digest"] == records.get(image_id).manifest
    assert desc["annotations"] == {"io.containerd.image.name": "docker.io/library/busybox:latest",
                                   "org.opencontainers.image.ref.name": "latest"}
    store2, records2 = new_store(tmp_path)
    (loaded,) = archive.load(store2, records2, io.BytesIO(data))
    assert (loaded.id, loaded.manifest) == (image_id, desc["digest"])
    assert [d.media_type for d in _layers_of(store2, loaded.manifest)] == [spec.OCI_LAYER_GZIP]


def test_save_unknown_image_is_not_found(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    with pytest.raises(NotFound):
        archive.save(store, records, ["nothing:here"], io.BytesIO())
    with pytest.raises(InvalidArgument):
        archive.save(store, records, [], io.BytesIO())


def test_load_legacy_docker_archive_with_symlinked_layer(tmp_path: Path) -> None:
    one = layer({"etc/one": b"1"})
    data, image_id = legacy_docker_archive([one, layer({"two": b"2"}), one], ["busybox:latest"])
    store, records = new_store(tmp_path)
    (loaded,) = archive.load(store, records, io.BytesIO(data))
    assert loaded.id == image_id and loaded.tags == ("busybox:latest",)
    layers = _layers_of(store, loaded.manifest)
    assert [d.digest for d in layers] == [sha(one), sha(layer({"two": b"2"})), sha(one)]
    assert store.read(layers[0].digest) == one
    assert records.get(image_id).size == 2 * len(one) + len(layer({"two": b"2"}))


@pytest.mark.parametrize("compress", [gz, bz2.compress, lzma.compress,
                                      zstandard.ZstdCompressor().compress])
def test_load_compressed_archive_and_untagged(compress: Callable[[bytes], bytes],
                                              tmp_path: Path) -> None:
    data, image_id = legacy_docker_archive([layer({"a": b"a"})], None)
    store, records = new_store(tmp_path)
    (loaded,) = archive.load(store, records, io.BytesIO(compress(data)))
    assert loaded.id == image_id and loaded.tags == ()
    assert records.names_of(image_id) == []


def test_load_compressed_layer_inside_docker_archive(tmp_path: Path) -> None:
    plain = layer({"a": b"a"})
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [sha(plain)]}}).encode()
    data = (TarBuilder().file("l.tar.gz", gz(plain)).file("c.json", cfg)
            .json("manifest.json", [{"Config": "c.json", "RepoTags": ["x:1"],
                                     "Layers": ["l.tar.gz"]}]).bytes())
    store, records = new_store(tmp_path)
    (loaded,) = archive.load(store, records, io.BytesIO(data))
    (desc,) = _layers_of(store, loaded.manifest)
    assert desc.media_type == spec.OCI_LAYER_GZIP and desc.digest == sha(gz(plain))


def test_load_oci_layout_tags_from_annotations(tmp_path: Path) -> None:
    data, image_id, manifest = oci_layout(
        [layer({"a": b"a"}), layer({"b": b"b"})],
        [{"io.containerd.image.name": "docker.io/library/alpine:3", "org.opencontainers"
          ".image.ref.name": "3"},
         {"org.opencontainers.image.ref.name": "registry.local:5000/x/y:edge"},
         {"org.opencontainers.image.ref.name": "bare"},
         None])
    store, records = new_store(tmp_path)
    (loaded,) = archive.load(store, records, io.BytesIO(data))
    assert (loaded.id, loaded.manifest) == (image_id, manifest)
    assert loaded.tags == ("alpine:3", "registry.local:5000/x/y:edge")
    assert all(store.exists(d.digest) for d in _layers_of(store, manifest))

    store2, records2 = new_store(tmp_path, "second")
    (loaded,) = archive.load(store2, records2, io.BytesIO(data), base_name="example.com/base")
    assert "example.com/base:bare" in loaded.tags


def test_load_oci_layout_through_a_platform_index(tmp_path: Path) -> None:
    plain = layer({"a": b"a"})
    inner, image_id, manifest = oci_layout([plain], [None])
    inner_members = _members(inner)
    manifest_raw = inner_members[f"blobs/sha256/{manifest[7:]}"]
    index = json.dumps({"schemaVersion": 2, "mediaType": spec.OCI_INDEX, "manifests": [
        {"mediaType": spec.OCI_MANIFEST, "digest": manifest, "size": len(manifest_raw),
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": spec.OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1,
         "platform": {"architecture": "s390x", "os": "linux"}}]}).encode()
    builder = TarBuilder().json("oci-layout", {"imageLayoutVersion": "1.0.0"})
    for name, blob in inner_members.items():
        if name.startswith("blobs/"):
            builder.file(name, blob)
    builder.file(f"blobs/sha256/{sha(index)[7:]}", index)
    builder.json("index.json", {"schemaVersion": 2, "manifests": [
        {"mediaType": spec.OCI_INDEX, "digest": sha(index), "size": len(index),
         "annotations": {"io.containerd.image.name": "docker.io/library/multi:1"}}]})
    store, records = new_store(tmp_path)
    (loaded,) = archive.load(store, records, io.BytesIO(builder.bytes()))
    assert (loaded.id, loaded.manifest, loaded.tags) == (image_id, manifest, ("multi:1",))


def test_load_docker25_archive_keeps_its_oci_manifest(tmp_path: Path) -> None:
    plain = layer({"a": b"a"})
    oci, image_id, manifest = oci_layout([plain], [None], compress=False)
    members = _members(oci)
    builder = TarBuilder()
    for name, blob in members.items():
        builder.file(name, blob)
    builder.json("manifest.json", [{"Config": f"blobs/sha256/{image_id[7:]}",
                                    "RepoTags": ["new:1"],
                                    "Layers": [f"blobs/sha256/{sha(plain)[7:]}"]}])
    store, records = new_store(tmp_path)
    (loaded,) = archive.load(store, records, io.BytesIO(builder.bytes()))
    assert (loaded.id, loaded.manifest, loaded.tags) == (image_id, manifest, ("new:1",))
