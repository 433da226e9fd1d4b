"""The registry client against a real registry: Debian's docker-registry on
loopback (apt packages: docker-registry, apache2-utils, openssl; skopeo for
the cross-check). Skips, saying why, when a tool is missing."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isobox.errors import NotFound
from isobox.images.content import ContentStore
from isobox.oci import reference
from isobox.registry import (
    CredentialStore,
    EventKind,
    RegistryClient,
    RegistryOptions,
    TLSVerificationError,
    Unauthorized,
)
from registry_server import (
    REGISTRY_BINARY,
    RegistryServer,
    make_image,
    make_index,
    make_layer,
    missing_tools,
    random_layer,
    registry_server,
    store_image,
)

pytestmark = pytest.mark.skipif(missing_tools(REGISTRY_BINARY) is not None,
                                reason=missing_tools(REGISTRY_BINARY) or "")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with registry_server(tmp_path_factory.mktemp("registry")) as running:
        yield running


def new_store(tmp_path: Path, name: str) -> ContentStore:
    return ContentStore(str(tmp_path / name))


def small_image(tag: str = "") -> Any:
    return make_image([make_layer({"etc/hello": f"hello {tag}".encode()}),
                       make_layer({"bin/tool": f"tool {tag}".encode() * 100})])


def client(**options: Any) -> RegistryClient:
    credentials = options.pop("credentials", None)
    return RegistryClient(RegistryOptions(backoff=0.05, **options), credentials=credentials)


def test_push_then_pull_round_trip(server: RegistryServer, tmp_path: Path) -> None:
    img = small_image("round trip")
    source = new_store(tmp_path, "source")
    ref = reference.parse(f"{server.host}/isobox/roundtrip:v1")
    with client() as registry:
        assert registry.push(ref, source, store_image(source, img)) == img.manifest_digest
        target = new_store(tmp_path, "target")
        result = registry.pull(ref, target)
    assert result.manifest_digest == img.manifest_digest
    assert result.config_digest == img.config_digest
    assert [d.digest for d in result.layers] == img.layer_digests
    assert result.config.rootfs.diff_ids and result.config.os == "linux"
    for digest in (*img.blobs, img.manifest_digest):
        assert target.read(digest) == source.read(digest)
    log = server.log()
    assert re.search(r'"PUT /v2/isobox/roundtrip/manifests/v1 HTTP/1\.1" 201', log)


def test_index_round_trip(server: RegistryServer, tmp_path: Path) -> None:
    amd64 = small_image("amd64")
    arm64 = make_image([make_layer({"a": b"arm64"})], platform=("linux", "arm64", "v8"))
    source = new_store(tmp_path, "source")
    for img in (amd64, arm64):
        store_image(source, img)
    raw, index_digest = make_index([amd64, arm64])
    source.put(raw, index_digest)
    ref = reference.parse(f"{server.host}/isobox/multi:v1")
    with client() as registry:
        registry.push(ref, source, index_digest)
        target = new_store(tmp_path, "target")
        result = registry.pull(ref, target, platform=("linux", "arm64", None))
        with pytest.raises(NotFound, match="no matching manifest for linux/s390x"):
            registry.pull(ref, new_store(tmp_path, "other"), platform=("linux", "s390x", None))
    assert result.index_digest == index_digest
    assert result.manifest_digest == arm64.manifest_digest
    assert not target.exists(amd64.layer_digests[0])


def test_cross_repository_mount(server: RegistryServer, tmp_path: Path) -> None:
    img = small_image("mount")
    store = new_store(tmp_path, "store")
    digest = store_image(store, img)
    events: list[Any] = []
    with client() as registry:
        registry.push(reference.parse(f"{server.host}/mount/a:v1"), store, digest)
        registry.push(reference.parse(f"{server.host}/mount/b:v1"), store, digest,
                      mount_from="mount/a", progress=events.append)
        pulled = registry.pull(reference.parse(f"{server.host}/mount/b:v1"),
                               new_store(tmp_path, "pulled"))
    assert pulled.manifest_digest == digest
    mounted = {e.digest for e in events if e.kind is EventKind.BLOB_MOUNTED}
    assert mounted == set(img.blobs)
    log = server.log()
    for blob in img.blobs:
        assert re.search(rf'"POST /v2/mount/b/blobs/uploads/\?[^"]*mount={blob}[^"]*" 201', log) \
            or re.search(rf'"POST /v2/mount/b/blobs/uploads/\?[^"]*mount='
                         rf'{blob.replace(":", "%3A")}[^"]*" 201', log), blob


def test_big_layer_goes_in_chunks(server: RegistryServer, tmp_path: Path) -> None:
    img = make_image([random_layer(9 << 20), make_layer({"small": b"x"})])
    store = new_store(tmp_path, "store")
    ref = reference.parse(f"{server.host}/isobox/big:v1")
    with client() as registry:
        registry.push(ref, store, store_image(store, img))
        target = new_store(tmp_path, "target")
        registry.pull(ref, target)
    big = img.layer_digests[0]
    assert target.read(big) == img.blobs[big]
    patches = re.findall(r'"PATCH /v2/isobox/big/blobs/uploads/[^"]*" 202', server.log())
    assert len(patches) == 2  # 9 MiB and a little, in 8 MiB chunks


def test_interrupted_pull_resumes_with_a_range(server: RegistryServer, tmp_path: Path) -> None:
    img = make_image([random_layer(1 << 20)])
    source = new_store(tmp_path, "source")
    ref = reference.parse(f"{server.host}/isobox/resume:v1")
    layer = img.layer_digests[0]
    with client() as registry:
        registry.push(ref, source, store_image(source, img))
        target = new_store(tmp_path, "target")
        with target.writer(layer, None) as partial:
            partial.write(img.blobs[layer][:300_000])
        registry.pull(ref, target)
    assert target.read(layer) == img.blobs[layer]
    assert re.search(rf'"GET /v2/isobox/resume/blobs/{layer} HTTP/1\.1" 206', server.log())


def test_unknown_tag_and_repository(server: RegistryServer, tmp_path: Path) -> None:
    store = new_store(tmp_path, "store")
    with client() as registry:
        registry.push(reference.parse(f"{server.host}/isobox/known:v1"), store,
                      store_image(store, small_image("known")))
        with pytest.raises(NotFound, match=re.escape(
                f"manifest for {server.host}/isobox/known:nope not found: manifest unknown")):
            registry.pull(reference.parse(f"{server.host}/isobox/known:nope"), store)
        # distribution answers MANIFEST_UNKNOWN (not NAME_UNKNOWN) for a repository it
        # never saw, as Docker's pull then reports too
        with pytest.raises(NotFound, match=re.escape(
                f"manifest for {server.host}/isobox/never-pushed:v1 not found")):
            registry.pull(reference.parse(f"{server.host}/isobox/never-pushed:v1"), store)


@pytest.mark.skipif(missing_tools("htpasswd") is not None,
                    reason=missing_tools("htpasswd") or "")
def test_auth_push_needs_login(tmp_path: Path) -> None:
    store = new_store(tmp_path, "store")
    img = small_image("auth")
    digest = store_image(store, img)
    config = tmp_path / "isobox-config" / "config.json"
    with registry_server(tmp_path / "registry", auth=("alice", "s3cret")) as server:
        ref = reference.parse(f"{server.host}/private/app:v1")
        credentials = CredentialStore(str(config))
        with client(credentials=credentials) as registry:
            with pytest.raises(Unauthorized) as info:
                registry.push(ref, store, digest)
            assert "unauthorized: authentication required" in str(info.value)
            with pytest.raises(Unauthorized, match="incorrect username or password"):
                registry.login(server.host, "alice", "wrong")
            assert not config.exists()
            registry.login(server.host, "alice", "s3cret")
            assert registry.push(ref, store, digest) == digest
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        doc = json.loads(config.read_text())
        assert set(doc["auths"]) == {server.host}
        assert doc["auths"][server.host]["auth"] == "YWxpY2U6czNjcmV0"  # alice:s3cret
        with client(credentials=CredentialStore(str(config))) as registry:
            pulled = registry.pull(ref, new_store(tmp_path, "pulled"))
        assert pulled.manifest_digest == digest
        with client() as anonymous, pytest.raises(Unauthorized, match="pull access denied"):
            anonymous.pull(ref, new_store(tmp_path, "anonymous"))


@pytest.mark.skipif(missing_tools("openssl") is not None,
                    reason=missing_tools("openssl") or "")
def test_tls_with_certs_d(tmp_path: Path) -> None:
    store = new_store(tmp_path, "store")
    digest = store_image(store, small_image("tls"))
    with registry_server(tmp_path / "registry", tls=True) as server:
        assert server.certs_dir is not None
        ref = reference.parse(f"{server.host}/secure/app:v1")
        with client(certs_dirs=(str(tmp_path / "absent"), str(server.certs_dir))) as registry:
            assert registry.push(ref, store, digest) == digest
            assert registry.pull(ref, new_store(tmp_path, "pulled")).manifest_digest == digest
        with client(certs_dirs=(str(tmp_path / "absent"),)) as untrusting, \
                pytest.raises(TLSVerificationError) as info:
            untrusting.pull(ref, new_store(tmp_path, "untrusted"))
        message = str(info.value)
        assert "failed to verify certificate" in message
        assert f"{tmp_path / 'absent'}/{server.host}/ca.crt" in message
        with client(insecure=(server.host,)) as insecure:
            assert insecure.pull(ref, new_store(tmp_path, "insecure")).manifest_digest == digest


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed "
                    "(apt-get install skopeo)")
def test_skopeo_reads_what_we_pushed(server: RegistryServer, tmp_path: Path) -> None:
    img = small_image("skopeo")
    store = new_store(tmp_path, "store")
    with client() as registry:
        registry.push(reference.parse(f"{server.host}/isobox/skopeo:v1"), store,
                      store_image(store, img))
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                          f"docker://{server.host}/isobox/skopeo:v1"],
                         capture_output=True, text=True, timeout=60, check=True,
                         stdin=subprocess.DEVNULL)
    inspected = json.loads(out.stdout)
    assert inspected["Digest"] == img.manifest_digest
    assert inspected["Layers"] == img.layer_digests
    assert inspected["Os"] == "linux" and inspected["Architecture"] == "amd64"
