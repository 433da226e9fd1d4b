"""Push against the fake registry: existing blobs skipped, mounts,
monolithic and chunked uploads, the manifest last, errors."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from registry_fake import FakeRegistry, error

from isobox.errors import InvalidArgument, NotFound
from isobox.images.content import ContentStore
from isobox.oci import reference
from isobox.registry import EventKind, RegistryClient, Unauthorized
from registry_server import make_image, make_index, make_layer, random_layer, store_image

REF = reference.parse("registry.test/app:1.0")


def small_image() -> Any:
    return make_image([make_layer({"a": b"alpha"}), make_layer({"b": b"beta"})])


def test_push_uploads_blobs_then_manifest(fake: FakeRegistry, client: RegistryClient,
                                          store: ContentStore) -> None:
    img = small_image()
    digest = client.push(REF, store, store_image(store, img))
    assert digest == img.manifest_digest
    assert fake.manifests["app"]["1.0"] == (img.manifest, img.media_type)
    assert fake.links["app"] == set(img.blobs)
    for data_digest, data in img.blobs.items():
        assert fake.blobs[data_digest] == data
    methods = [r.method for r in fake.requests if "/manifests/" in r.url.path]
    assert methods == ["PUT"]
    assert fake.requests[-1].method == "PUT" and "/manifests/1.0" in fake.requests[-1].url.path
    puts = fake.seen("PUT", "/blobs/uploads/")
    assert len(puts) == 3 and not fake.seen("PATCH", "/blobs/uploads/")
    assert {p.url.params["digest"] for p in puts} == set(img.blobs)
    assert all(p.url.params["_state"] == "s0" for p in puts)  # the Location's query is kept
    put_manifest = fake.seen("PUT", "/manifests/1.0")[0]
    assert put_manifest.headers["content-type"] == img.media_type


def test_push_skips_blobs_the_registry_has(fake: FakeRegistry, client: RegistryClient,
                                          store: ContentStore) -> None:
    img = small_image()
    fake.add_blob("app", img.blobs[img.layer_digests[0]])
    events: list[Any] = []
    client.push(REF, store, store_image(store, img), progress=events.append)
    assert len(fake.seen("POST", "/blobs/uploads/")) == 2
    exists = [e.digest for e in events if e.kind is EventKind.BLOB_EXISTS]
    assert exists == [img.layer_digests[0]]


def test_push_mounts_from_another_repository(fake: FakeRegistry, client: RegistryClient,
                                             store: ContentStore) -> None:
    img = small_image()
    for digest, data in img.blobs.items():
        fake.add_blob("base", data, digest)
    events: list[Any] = []
    client.push(REF, store, store_image(store, img), mount_from="base",
                progress=events.append)
    posts = fake.seen("POST", "/v2/app/blobs/uploads/")
    assert len(posts) == 3
    assert all(p.url.params["from"] == "base" and p.url.params["mount"] in img.blobs
               for p in posts)
    assert not fake.seen("PUT", "/blobs/uploads/")
    mounted = [e for e in events if e.kind is EventKind.BLOB_MOUNTED]
    assert {e.digest for e in mounted} == set(img.blobs)
    assert all(e.detail == "base" for e in mounted)


def test_refused_mount_falls_back_to_upload(fake: FakeRegistry, client: RegistryClient,
                                            store: ContentStore) -> None:
    img = small_image()  # "base" does not have the blobs: the registry opens an upload
    client.push(REF, store, store_image(store, img), mount_from={img.config_digest: "base"})
    assert len(fake.seen("PUT", "/blobs/uploads/")) == 3
    assert fake.links["app"] == set(img.blobs)


def test_big_blobs_go_in_chunks(fake: FakeRegistry, make_client: Any,
                                store: ContentStore) -> None:
    img = make_image([random_layer(250_000), make_layer({"small": b"x"})])
    client = make_client(chunk_threshold=100_000, chunk_size=64 * 1024)
    client.push(REF, store, store_image(store, img))
    big = img.layer_digests[0]
    size = len(img.blobs[big])
    patches = fake.seen("PATCH", "/blobs/uploads/")
    assert len(patches) == -(-size // 65536)
    ranges = [p.headers["content-range"] for p in patches]
    assert ranges[0] == "0-65535" and ranges[-1] == f"{65536 * (len(ranges) - 1)}-{size - 1}"
    assert all(p.headers["content-type"] == "application/octet-stream" for p in patches)
    final = [p for p in fake.seen("PUT", "/blobs/uploads/") if p.url.params["digest"] == big]
    assert len(final) == 1 and final[0].content == b""
    assert fake.blobs[big] == img.blobs[big]


def test_push_index_pushes_each_manifest(fake: FakeRegistry, client: RegistryClient,
                                         store: ContentStore) -> None:
    amd64 = make_image([make_layer({"a": b"amd64"})])
    arm64 = make_image([make_layer({"a": b"arm64"})], platform=("linux", "arm64", "v8"))
    for img in (amd64, arm64):
        store_image(store, img)
    raw, digest = make_index([amd64, arm64])
    store.put(raw, digest)
    client.push(REF, store, digest)
    assert fake.manifests["app"]["1.0"][0] == raw
    assert amd64.manifest_digest in fake.manifests["app"]
    assert arm64.manifest_digest in fake.manifests["app"]


def test_push_of_incomplete_image_is_refused(fake: FakeRegistry, client: RegistryClient,
                                             store: ContentStore) -> None:
    img = small_image()
    store.put(img.manifest, img.manifest_digest)
    with pytest.raises(NotFound, match="blobs missing from the content store"):
        client.push(REF, store, img.manifest_digest)
    assert fake.requests == []


def test_push_by_other_digest_is_refused(client: RegistryClient, store: ContentStore) -> None:
    img = small_image()
    digest = store_image(store, img)
    with pytest.raises(InvalidArgument):
        client.push(REF.with_digest(img.config_digest), store, digest)


def test_unauthenticated_push(fake: FakeRegistry, client: RegistryClient,
                              store: ContentStore) -> None:
    fake.auth = "basic"
    with pytest.raises(Unauthorized) as info:
        client.push(REF, store, store_image(store, small_image()))
    assert "unauthorized: authentication required" in str(info.value)
    assert "isobox login registry.test" in str(info.value)


def test_push_denied(fake: FakeRegistry, client: RegistryClient, store: ContentStore) -> None:
    fake.fail(10, lambda r: r.method == "POST",
              lambda r: error(403, "DENIED", "requested access to the resource is denied"))
    with pytest.raises(Unauthorized, match="denied: requested access to the resource is denied"):
        client.push(REF, store, store_image(store, small_image()))


def test_upload_retried_after_server_error(fake: FakeRegistry, client: RegistryClient,
                                           store: ContentStore) -> None:
    img = small_image()
    fake.fail(1, lambda r: r.method == "PUT" and "/uploads/" in r.url.path,
              lambda r: httpx.Response(503))
    client.push(REF, store, store_image(store, img))
    assert fake.links["app"] == set(img.blobs)
