"""Authentication: Bearer token flow, Basic, login, and credentials that
must not follow a redirect to another host."""

from __future__ import annotations

import base64
import ssl
from typing import Any

import httpx
import pytest
from registry_fake import AUTH_HOST, STORAGE_HOST, FakeRegistry

from isobox.errors import Unavailable
from isobox.images.content import ContentStore
from isobox.oci import reference
from isobox.registry import Credentials, CredentialStore, RegistryClient, Unauthorized
from isobox.registry._http import redirect_request
from isobox.registry.auth import parse_challenge
from isobox.registry.errors import TLSVerificationError
from registry_server import make_image, make_layer, store_image

REF = reference.parse("registry.test/app:1.0")


def image() -> Any:
    return make_image([make_layer({"a": b"alpha"}), make_layer({"b": b"beta"})])


def test_parse_challenge() -> None:
    challenge = parse_challenge('Bearer realm="https://auth.docker.io/token",'
                                'service="registry.docker.io",'
                                'scope="repository:library/busybox:pull,push"')
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.docker.io/token"
    assert challenge.service == "registry.docker.io"
    assert challenge.scopes == ("repository:library/busybox:pull,push",)
    basic = parse_challenge('Basic realm="a \\"quoted\\" realm"')
    assert basic is not None and basic.realm == 'a "quoted" realm'
    assert parse_challenge("Negotiate abc") is None
    assert parse_challenge(None) is None


def test_anonymous_bearer_token(fake: FakeRegistry, client: RegistryClient,
                                store: ContentStore) -> None:
    fake.auth = "bearer"
    fake.add_image("app", "1.0", image())
    client.pull(REF, store)
    token_requests = [r for r in fake.requests if r.url.host == AUTH_HOST]
    assert len(token_requests) == 1, "one token serves the whole pull"
    params = token_requests[0].url.params
    assert params["service"] == "registry.test"
    assert params.get_list("scope") == ["repository:app:pull"]
    assert "authorization" not in token_requests[0].headers
    registry_requests = [r for r in fake.requests
                         if r.url.host == "registry.test" and r.url.path != "/v2/"]
    assert all(r.headers["authorization"].startswith("Bearer ") for r in registry_requests)


def test_bearer_token_with_credentials_and_access_token(fake: FakeRegistry, make_client: Any,
                                                        creds: CredentialStore,
                                                        store: ContentStore) -> None:
    fake.auth = "bearer"
    fake.token_field = "access_token"
    creds.store("registry.test", Credentials("alice", "secret"))
    client = make_client(credentials=creds)
    client.push(REF, store, store_image(store, image()))
    token_requests = [r for r in fake.requests if r.url.host == AUTH_HOST]
    assert token_requests
    first = token_requests[0]
    assert first.headers["authorization"] == "Basic " + base64.b64encode(
        b"alice:secret").decode()
    assert first.url.params["account"] == "alice"
    assert "repository:app:pull,push" in first.url.params.get_list("scope")
    assert "1.0" in fake.manifests["app"]


def test_mount_asks_for_pull_on_the_source(fake: FakeRegistry, client: RegistryClient,
                                           store: ContentStore) -> None:
    fake.auth = "bearer"
    img = image()
    for digest, data in img.blobs.items():
        fake.add_blob("base", data, digest)
    client.push(REF, store, store_image(store, img), mount_from="base")
    scopes = {s for r in fake.requests if r.url.host == AUTH_HOST
              for s in r.url.params.get_list("scope")}
    assert "repository:base:pull" in scopes


def test_bad_token_credentials(fake: FakeRegistry, make_client: Any, creds: CredentialStore,
                               store: ContentStore) -> None:
    fake.auth = "bearer"
    fake.add_image("app", "1.0", image())
    creds.store("registry.test", Credentials("alice", "wrong"))
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        make_client(credentials=creds).pull(REF, store)


def test_basic_auth_from_the_credential_store(fake: FakeRegistry, make_client: Any,
                                              creds: CredentialStore,
                                              store: ContentStore) -> None:
    fake.auth = "basic"
    fake.add_image("app", "1.0", image())
    creds.store("registry.test", Credentials("alice", "secret"))
    make_client(credentials=creds).pull(REF, store)
    expected = "Basic " + base64.b64encode(b"alice:secret").decode()
    later = [r for r in fake.requests if r.url.path != "/v2/"]
    assert all(r.headers.get("authorization") == expected for r in later)


def test_redirect_to_storage_drops_credentials(fake: FakeRegistry, make_client: Any,
                                               creds: CredentialStore,
                                               store: ContentStore) -> None:
    fake.auth = "basic"
    fake.redirect_blobs = True
    img = image()
    fake.add_image("app", "1.0", img)
    creds.store("registry.test", Credentials("alice", "secret"))
    make_client(credentials=creds).pull(REF, store)
    storage = [r for r in fake.requests if r.url.host == STORAGE_HOST]
    assert len(storage) == 3
    assert all("authorization" not in r.headers for r in storage)
    assert all(store.exists(d) for d in img.blobs)


def test_redirect_request_rules() -> None:
    request = httpx.Request("GET", "https://registry.test/v2/a/blobs/x",
                            headers={"Authorization": "Bearer t", "Range": "bytes=5-"})
    same = redirect_request(request, 307, "/other")
    assert same.headers["authorization"] == "Bearer t"
    assert same.url == "https://registry.test/other"
    assert same.headers["range"] == "bytes=5-"
    for target in ("https://storage.test/x", "http://registry.test/x",
                   "https://registry.test:8443/x"):
        moved = redirect_request(request, 302, target)
        assert "authorization" not in moved.headers, target
        assert moved.headers["host"] == httpx.URL(target).netloc.decode()
    post = httpx.Request("POST", "https://registry.test/x", content=b"body",
                         headers={"Authorization": "Basic x"})
    assert redirect_request(post, 303, "/y").method == "GET"
    kept = redirect_request(post, 307, "/y")
    assert kept.method == "POST" and kept.content == b"body"


def test_login_verifies_then_stores(fake: FakeRegistry, make_client: Any,
                                    creds: CredentialStore) -> None:
    fake.auth = "basic"
    client = make_client(credentials=creds)
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        client.login("registry.test", "alice", "wrong")
    assert creds.get("registry.test") is None
    client.login("registry.test", "alice", "secret")
    assert creds.get("registry.test") == Credentials("alice", "secret")
    assert client.logout("registry.test") is True
    assert creds.get("registry.test") is None
    assert client.logout("registry.test") is False


def test_login_with_bearer(fake: FakeRegistry, make_client: Any,
                           creds: CredentialStore) -> None:
    fake.auth = "bearer"
    client = make_client(credentials=creds)
    with pytest.raises(Unauthorized):
        client.login("https://registry.test/", "alice", "nope")
    client.login("https://registry.test/", "alice", "secret")
    assert creds.get("registry.test") == Credentials("alice", "secret")


def test_loopback_registry_falls_back_to_http(store: ContentStore) -> None:
    fake = FakeRegistry(host="127.0.0.1:5000")
    img = image()
    fake.add_image("app", "1.0", img)

    def plain_only(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number",
                                 request=request)

    fake.fail(100, lambda r: r.url.scheme == "https", plain_only)
    with RegistryClient(transport=fake.transport(), sleep=lambda s: None) as client:
        client.pull(reference.parse("127.0.0.1:5000/app:1.0"), store)
    assert fake.requests[-1].url.scheme == "http"


def test_remote_registry_never_falls_back_to_http(fake: FakeRegistry, client: RegistryClient,
                                                  store: ContentStore) -> None:
    fake.add_image("app", "1.0", image())
    fake.fail(100, lambda r: r.url.scheme == "https",
              lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused", request=r)))
    with pytest.raises(Unavailable, match=r"registry registry\.test is unreachable"):
        client.pull(REF, store)
    assert all(r.url.scheme == "https" for r in fake.requests)


def test_untrusted_certificate_is_a_clear_error_not_a_downgrade(store: ContentStore) -> None:
    fake = FakeRegistry(host="localhost:5000")

    def untrusted(request: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                                                "verify failed: self-signed certificate")
        cause.verify_message = "self-signed certificate"
        raise httpx.ConnectError(str(cause), request=request) from cause

    fake.fail(100, lambda r: r.url.scheme == "https", untrusted)
    with (RegistryClient(transport=fake.transport(), sleep=lambda s: None) as client,
          pytest.raises(TLSVerificationError) as info):
        client.pull(reference.parse("localhost:5000/app:1.0"), store)
    message = str(info.value)
    assert "tls: failed to verify certificate" in message
    assert "/etc/docker/certs.d/localhost:5000/ca.crt" in message
    assert all(r.url.scheme == "https" for r in fake.requests)
