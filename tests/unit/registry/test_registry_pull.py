"""Pull against the fake registry: resolution, platforms, verification,
retries, resume, and the errors users see."""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

import httpx
import pytest
from registry_fake import BrokenStream, FakeRegistry, error, sha256

from isobox.errors import InvalidArgument, NotFound, Unavailable
from isobox.images.content import ContentStore, DigestMismatch
from isobox.oci import reference
from isobox.registry import SCHEMA1_MESSAGE, EventKind, Forbidden, RegistryClient, Unauthorized
from registry_server import make_image, make_index, make_layer, random_layer

REF = reference.parse("registry.test/app:1.0")


def image(n: int = 2) -> Any:
    return make_image([make_layer({f"file{i}": f"content {i}".encode()}) for i in range(n)])


def blob_get(digest: str) -> Any:
    return lambda r: r.method == "GET" and r.url.path.endswith(f"/blobs/{digest}")


def ingests(store: ContentStore) -> list[str]:
    return os.listdir(os.path.join(store.root, "ingest"))


def test_pull_stores_verified_image(fake: FakeRegistry, client: RegistryClient,
                                    store: ContentStore) -> None:
    img = image()
    fake.add_image("app", "1.0", img)
    events: list[Any] = []
    result = client.pull(REF, store, progress=events.append)
    assert result.manifest_digest == img.manifest_digest
    assert result.index_digest is None
    assert result.config_digest == img.config_digest
    assert [d.digest for d in result.layers] == img.layer_digests
    assert result.config.os == "linux"
    assert set(store.digests()) == {*img.blobs, img.manifest_digest}
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.RESOLVING and kinds[-1] is EventKind.MANIFEST
    assert kinds.count(EventKind.BLOB_DONE) == 3  # config and two layers
    assert ingests(store) == []


def test_pull_resolves_with_head_then_gets_by_digest(fake: FakeRegistry,
                                                     client: RegistryClient,
                                                     store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    client.pull(REF, store)
    assert fake.seen("HEAD", r"/manifests/1\.0$")
    assert fake.seen("GET", f"/manifests/{img.manifest_digest}$")
    accept = fake.seen("HEAD", r"/manifests/1\.0$")[0].headers["accept"]
    for media in ("application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"):
        assert media in accept


def test_second_pull_skips_blobs_already_stored(fake: FakeRegistry, client: RegistryClient,
                                               store: ContentStore) -> None:
    img = image()
    fake.add_image("app", "1.0", img)
    client.pull(REF, store)
    fake.requests.clear()
    events: list[Any] = []
    client.pull(REF, store, progress=events.append)
    assert not fake.seen("GET", "/blobs/")
    assert [e.kind for e in events].count(EventKind.BLOB_EXISTS) == 3


def test_pull_by_digest(fake: FakeRegistry, client: RegistryClient, store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    result = client.pull(REF.with_digest(img.manifest_digest), store)
    assert result.manifest_digest == img.manifest_digest
    assert not fake.seen("HEAD", "/manifests/")


def test_platform_selected_from_index(fake: FakeRegistry, client: RegistryClient,
                                      store: ContentStore) -> None:
    amd64 = make_image([make_layer({"a": b"amd64"})])
    arm64 = make_image([make_layer({"a": b"arm64"})], platform=("linux", "arm64", "v8"))
    raw, index_digest = make_index([arm64, amd64])
    for img in (amd64, arm64):
        fake.add_image("app", img.manifest_digest, img)
    fake.add_manifest("app", "1.0", raw, "application/vnd.oci.image.index.v1+json")

    result = client.pull(REF, store)
    assert result.index_digest == index_digest
    assert result.manifest_digest == amd64.manifest_digest
    assert store.exists(index_digest) and not store.exists(arm64.layer_digests[0])

    other = ContentStore(store.root + "-arm")
    result = client.pull(REF, other, platform=("linux", "arm64", None))
    assert result.manifest_digest == arm64.manifest_digest


def test_missing_platform_names_it_and_lists_the_others(fake: FakeRegistry,
                                                        client: RegistryClient,
                                                        store: ContentStore) -> None:
    arm64 = make_image([make_layer({"a": b"arm64"})], platform=("linux", "arm64", "v8"))
    s390x = make_image([make_layer({"a": b"s390x"})], platform=("linux", "s390x", None))
    raw, _ = make_index([arm64, s390x])
    fake.add_manifest("app", "1.0", raw, "application/vnd.oci.image.index.v1+json")
    with pytest.raises(NotFound) as info:
        client.pull(REF, store)
    message = str(info.value)
    assert "no matching manifest for linux/amd64" in message
    assert "linux/arm64/v8" in message and "linux/s390x" in message
    assert list(store.digests()) == []


def test_schema1_is_refused(fake: FakeRegistry, client: RegistryClient,
                            store: ContentStore) -> None:
    raw = json.dumps({"schemaVersion": 1, "name": "app", "tag": "1.0", "fsLayers": [],
                      "history": [], "signatures": []}).encode()
    fake.add_manifest("app", "1.0", raw,
                      "application/vnd.docker.distribution.manifest.v1+prettyjws")
    with pytest.raises(InvalidArgument, match="schema1 manifests are not supported"):
        client.pull(REF, store)
    assert SCHEMA1_MESSAGE.startswith("schema1 manifests are not supported")
    assert list(store.digests()) == []


def test_layer_digest_mismatch_leaves_nothing_in_the_store(fake: FakeRegistry,
                                                           client: RegistryClient,
                                                           store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    layer = img.layer_digests[0]
    fake.blobs[layer] = b"X" * len(img.blobs[layer])  # same size, other bytes
    with pytest.raises(DigestMismatch, match=layer):
        client.pull(REF, store)
    assert not store.exists(layer)
    assert not store.exists(img.manifest_digest)
    assert ingests(store) == []


def test_manifest_not_matching_announced_digest_is_rejected(fake: FakeRegistry,
                                                            client: RegistryClient,
                                                            store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    tampered = img.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":   2')
    fake.fail(1, lambda r: r.method == "HEAD", lambda r: httpx.Response(404))
    fake.fail(1, lambda r: r.method == "GET" and "/manifests/" in r.url.path,
              lambda r: httpx.Response(200, content=tampered, headers={
                  "Content-Type": img.media_type, "Docker-Content-Digest": img.manifest_digest}))
    with pytest.raises(DigestMismatch, match="manifest"):
        client.pull(REF, store)
    assert list(store.digests()) == []


def test_server_errors_are_retried_with_backoff(fake: FakeRegistry, client: RegistryClient,
                                                store: ContentStore, sleeps: list[float]) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    fake.fail(2, blob_get(img.layer_digests[0]),
              lambda r: error(503, "UNAVAILABLE", "try later"))
    fake.fail(1, lambda r: r.method == "HEAD",
              lambda r: httpx.Response(429, headers={"Retry-After": "2"}))
    client.pull(REF, store)
    assert store.exists(img.layer_digests[0])
    assert sorted(sleeps) == [0.5, 1.0, 2.0]


def test_retries_are_bounded(fake: FakeRegistry, make_client: Any, store: ContentStore,
                             sleeps: list[float]) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    fake.fail(100, blob_get(img.layer_digests[0]), lambda r: httpx.Response(502))
    with pytest.raises(Unavailable, match="502"):
        make_client(retries=3).pull(REF, store)
    assert len(fake.seen("GET", f"/blobs/{img.layer_digests[0]}")) == 3
    assert sleeps == [0.5, 1.0]


def test_connection_errors_are_retried(fake: FakeRegistry, client: RegistryClient,
                                       store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fake.fail(2, lambda r: r.url.path.endswith("/manifests/1.0"), refuse)
    client.pull(REF, store)
    assert store.exists(img.manifest_digest)


def test_reset_mid_blob_resumes_with_range(fake: FakeRegistry, client: RegistryClient,
                                           store: ContentStore) -> None:
    img = make_image([random_layer(300_000)])
    fake.add_image("app", "1.0", img)
    layer = img.layer_digests[0]
    half = len(img.blobs[layer]) // 2
    fake.fail(1, blob_get(layer),
              lambda r: httpx.Response(200, stream=BrokenStream(img.blobs[layer][:half])))
    client.pull(REF, store)
    gets = fake.seen("GET", f"/blobs/{layer}")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={half}-"
    assert store.read(layer) == img.blobs[layer]


def partial_ingest(store: ContentStore, digest: str, data: bytes) -> None:
    """What an interrupted pull leaves behind: data in ingest, not committed."""
    with store.writer(digest, None) as writer:
        writer.write(data)
    assert writer.offset == len(data) and not store.exists(digest)


def test_partial_ingest_is_resumed_with_range(fake: FakeRegistry, client: RegistryClient,
                                              store: ContentStore) -> None:
    img = make_image([random_layer(100_000)])
    fake.add_image("app", "1.0", img)
    layer = img.layer_digests[0]
    partial_ingest(store, layer, img.blobs[layer][:40_000])
    client.pull(REF, store)
    (get,) = fake.seen("GET", f"/blobs/{layer}")
    assert get.headers["range"] == "bytes=40000-"
    assert store.read(layer) == img.blobs[layer]
    assert ingests(store) == []


def test_server_ignoring_range_gets_the_whole_body(fake: FakeRegistry, client: RegistryClient,
                                                   store: ContentStore) -> None:
    img = make_image([random_layer(50_000)])
    fake.add_image("app", "1.0", img)
    fake.honour_range = False
    layer = img.layer_digests[0]
    partial_ingest(store, layer, img.blobs[layer][:1000])
    client.pull(REF, store)
    assert store.read(layer) == img.blobs[layer]


def test_corrupt_partial_ingest_is_downloaded_again(fake: FakeRegistry, client: RegistryClient,
                                                    store: ContentStore) -> None:
    img = make_image([random_layer(50_000)])
    fake.add_image("app", "1.0", img)
    layer = img.layer_digests[0]
    partial_ingest(store, layer, b"\0" * 1000)
    client.pull(REF, store)
    gets = fake.seen("GET", f"/blobs/{layer}")
    assert [g.headers.get("range") for g in gets] == ["bytes=1000-", None]
    assert store.read(layer) == img.blobs[layer]


def test_unauthorized_says_pull_access_denied(fake: FakeRegistry, client: RegistryClient,
                                              store: ContentStore) -> None:
    fake.auth = "basic"
    fake.add_image("app", "1.0", image(1))
    with pytest.raises(Unauthorized) as info:
        client.pull(REF, store)
    assert str(info.value).startswith(
        "pull access denied for registry.test/app, repository does not exist or may "
        "require 'docker login'")
    assert "unauthorized: authentication required" in str(info.value)


def test_forbidden(fake: FakeRegistry, client: RegistryClient, store: ContentStore) -> None:
    fake.fail(5, lambda r: "/manifests/" in r.url.path,
              lambda r: error(403, "DENIED", "requested access to the resource is denied"))
    with pytest.raises(Forbidden, match=r"pull access denied for registry\.test/app.*denied"):
        client.pull(REF, store)


def test_unknown_tag(fake: FakeRegistry, client: RegistryClient, store: ContentStore) -> None:
    fake.add_image("app", "1.0", image(1))
    with pytest.raises(NotFound) as info:
        client.pull(reference.parse("registry.test/app:nope"), store)
    assert str(info.value) == ("manifest for registry.test/app:nope not found: "
                               "manifest unknown")


def test_unknown_repository(fake: FakeRegistry, client: RegistryClient,
                            store: ContentStore) -> None:
    with pytest.raises(NotFound, match=re.escape(
            "pull access denied for registry.test/nope, repository does not exist or may "
            "require 'docker login'")):
        client.pull(reference.parse("registry.test/nope"), store)


def test_unknown_blob(fake: FakeRegistry, client: RegistryClient, store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    fake.links["app"].discard(img.layer_digests[0])
    with pytest.raises(NotFound, match=f"blob {img.layer_digests[0]} .*blob unknown"):
        client.pull(REF, store)
    assert not store.exists(img.manifest_digest)


def test_parallel_downloads_all_land(fake: FakeRegistry, client: RegistryClient,
                                     store: ContentStore) -> None:
    img = make_image([random_layer(20_000 + i) for i in range(6)])
    fake.add_image("app", "1.0", img)
    client.pull(REF, store)
    for digest, data in img.blobs.items():
        assert store.read(digest) == data


def test_failing_layer_stops_the_pull(fake: FakeRegistry, make_client: Any,
                                      store: ContentStore) -> None:
    img = make_image([random_layer(10_000 + i) for i in range(4)])
    fake.add_image("app", "1.0", img)
    fake.fail(100, blob_get(img.layer_digests[2]), lambda r: httpx.Response(500))
    with pytest.raises(Unavailable):
        make_client(retries=2).pull(REF, store)
    assert not store.exists(img.manifest_digest)
    assert not store.exists(img.layer_digests[2])


def test_docker_hub_reference_goes_to_registry_1(store: ContentStore) -> None:
    fake = FakeRegistry(host="registry-1.docker.io")
    img = image(1)
    fake.add_image("library/busybox", "latest", img)
    with RegistryClient(transport=fake.transport(), sleep=lambda s: None) as client:
        result = client.pull(reference.parse("busybox"), store)
    assert result.manifest_digest == img.manifest_digest
    assert all(r.url.host == "registry-1.docker.io" for r in fake.requests)
    assert sha256(img.manifest) == img.manifest_digest


def test_dropped_connection_is_retried(fake: FakeRegistry, client: RegistryClient,
                                       store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)

    def drop(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                        request=request)

    fake.fail(1, blob_get(img.config_digest), drop)
    client.pull(REF, store)
    assert len(fake.seen("GET", f"/blobs/{img.config_digest}")) == 2


def test_unknown_host_is_not_retried(fake: FakeRegistry, client: RegistryClient,
                                     store: ContentStore, sleeps: list[float]) -> None:
    def no_such_host(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    fake.fail(100, lambda r: True, no_such_host)
    with pytest.raises(Unavailable, match="Name or service not known"):
        client.pull(REF, store)
    assert len(fake.requests) == 1 and sleeps == []


def test_repull_uses_the_stored_manifest(fake: FakeRegistry, client: RegistryClient,
                                         store: ContentStore) -> None:
    img = image(1)
    fake.add_image("app", "1.0", img)
    client.pull(REF, store)
    fake.requests.clear()
    result = client.pull(REF, store)
    assert result.manifest_digest == img.manifest_digest
    assert [r.method for r in fake.requests] == ["HEAD"]
