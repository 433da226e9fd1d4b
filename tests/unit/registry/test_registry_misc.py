"""Credentials files, progress renderers, TLS settings, error wording, and
the package's public surface."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

import isobox.registry as registry
from isobox.errors import InvalidArgument
from isobox.registry import (
    DOCKER_HUB_KEY,
    Credentials,
    CredentialStore,
    EventKind,
    JSONProgress,
    PlainProgress,
    ProgressEvent,
    docker_config_path,
    docker_status,
    registry_domain,
    registry_key,
)
from isobox.registry._http import RetryPolicy
from isobox.registry.errors import describe
from isobox.registry.tls import TLSConfig, host_dirs, is_insecure, is_loopback, ssl_context

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
DIGEST = "sha256:" + "ab" * 32


# ---------------------------------------------------------------- credentials


def test_credentials_file_is_docker_format_and_private(tmp_path: Path) -> None:
    path = tmp_path / "isobox" / "config.json"
    store = CredentialStore(str(path))
    store.store("127.0.0.1:5000", Credentials("alice", "s3:cret"))
    store.store("docker.io", Credentials("bob", "pw"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["auths"]["127.0.0.1:5000"]["auth"] == base64.b64encode(b"alice:s3:cret").decode()
    assert DOCKER_HUB_KEY in doc["auths"]
    assert store.get("127.0.0.1:5000") == Credentials("alice", "s3:cret")
    assert store.get("index.docker.io") == Credentials("bob", "pw")
    assert store.get("other:5000") is None
    assert "s3:cret" not in repr(store.get("127.0.0.1:5000"))


def test_credentials_keep_unknown_keys_and_erase(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"https://host:5000/v1/": {"auth": base64.b64encode(
        b"u:p").decode()}}, "psFormat": "table"}))
    store = CredentialStore(str(path))
    assert store.get("host:5000") == Credentials("u", "p")
    store.store("host:5000", Credentials("u2", "p2"))
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "table"
    assert list(doc["auths"]) == ["host:5000"]
    assert store.erase("host:5000") is True
    assert store.erase("host:5000") is False
    assert json.loads(path.read_text())["auths"] == {}


def test_docker_config_is_a_read_only_fallback(tmp_path: Path) -> None:
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps(
        {"auths": {"reg.example:443": {"username": "carol", "password": "pw"}}}))
    ours = tmp_path / "ours.json"
    store = CredentialStore.with_docker_fallback(str(ours), {"DOCKER_CONFIG": str(docker_dir)})
    assert store.get("reg.example:443") == Credentials("carol", "pw")
    store.store("reg.example:443", Credentials("dave", "pw2"))
    assert store.get("reg.example:443") == Credentials("dave", "pw2")
    assert "carol" in (docker_dir / "config.json").read_text()


def test_docker_config_path() -> None:
    assert docker_config_path({"DOCKER_CONFIG": "/x"}) == "/x/config.json"
    assert docker_config_path({"HOME": "/home/u"}) == "/home/u/.docker/config.json"


def test_bad_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        CredentialStore(str(path)).get("x")


def test_registry_names() -> None:
    assert registry_key("docker.io") == DOCKER_HUB_KEY
    assert registry_key("https://index.docker.io/v1/") == DOCKER_HUB_KEY
    assert registry_key("http://Host:5000/") == "host:5000"
    assert registry_domain("https://index.docker.io/v1/") == "docker.io"
    assert registry_domain("127.0.0.1:5000") == "127.0.0.1:5000"
    assert registry_domain("http://127.0.0.1:5000/") == "127.0.0.1:5000"


# ---------------------------------------------------------------- progress


def event(kind: EventKind, action: str = "pull", media: str = LAYER, **kw: object) -> ProgressEvent:
    return ProgressEvent(kind, action, "127.0.0.1:5000/app", "1.0", digest=DIGEST,
                         media_type=media, **kw)  # type: ignore[arg-type]


def test_docker_json_progress() -> None:
    assert docker_status(event(EventKind.RESOLVING)) == {
        "status": "Pulling from 127.0.0.1:5000/app", "id": "1.0"}
    assert docker_status(event(EventKind.BLOB_PROGRESS, current=10, total=20)) == {
        "status": "Downloading", "progressDetail": {"current": 10, "total": 20},
        "id": "abababababab"}
    assert docker_status(event(EventKind.BLOB_EXISTS))["status"] == "Already exists"  # type: ignore[index]
    assert docker_status(event(EventKind.BLOB_DONE, "push"))["status"] == "Pushed"  # type: ignore[index]
    assert docker_status(event(EventKind.BLOB_MOUNTED, "push", detail="base"))[  # type: ignore[index]
        "status"] == "Mounted from base"
    assert docker_status(event(EventKind.BLOB_DONE, media=CONFIG)) is None
    assert docker_status(event(EventKind.MANIFEST)) == {"status": f"Digest: {DIGEST}"}
    pushed = docker_status(event(EventKind.MANIFEST, "push", total=527))
    assert pushed is not None and pushed["status"] == f"1.0: digest: {DIGEST} size: 527"
    lines: list[dict[str, object]] = []
    JSONProgress(lines.append)(event(EventKind.BLOB_START))
    assert lines == [{"id": "abababababab", "progressDetail": {}, "status": "Pulling fs layer"}]


def test_plain_progress_lines() -> None:
    out = io.StringIO()
    with PlainProgress(out) as progress:
        for kind in (EventKind.RESOLVING, EventKind.BLOB_START, EventKind.BLOB_PROGRESS,
                     EventKind.BLOB_DONE, EventKind.MANIFEST):
            progress(event(kind, current=1, total=2))
    assert out.getvalue().splitlines() == [
        "1.0: Pulling from 127.0.0.1:5000/app", "abababababab: Pulling fs layer",
        "abababababab: Pull complete", f"Digest: {DIGEST}"]


def test_rich_progress_renders_without_a_terminal() -> None:
    out = io.StringIO()
    with registry.RichProgress(out) as progress:
        for kind in (EventKind.RESOLVING, EventKind.BLOB_START, EventKind.BLOB_PROGRESS,
                     EventKind.BLOB_DONE, EventKind.MANIFEST):
            progress(event(kind, current=1, total=2))
    assert "Digest:" in out.getvalue()
    assert isinstance(registry.terminal_progress(io.StringIO()), PlainProgress)


# ---------------------------------------------------------------- TLS, retries, errors


def test_loopback_and_insecure() -> None:
    assert is_loopback("localhost:5000") and is_loopback("127.0.0.2") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.test:5000") and not is_loopback("10.0.0.1")
    insecure = ("10.0.0.0/8", "reg.lan:5000", "http://other.lan")
    assert is_insecure("10.1.2.3:5000", insecure)
    assert is_insecure("reg.lan:5000", insecure) and not is_insecure("reg.lan:6000", insecure)
    assert is_insecure("other.lan:443", insecure)
    assert not is_insecure("11.0.0.1", insecure)


def test_certs_dirs_are_searched_in_order(tmp_path: Path) -> None:
    first, second = tmp_path / "isobox-certs.d", tmp_path / "docker-certs.d"
    (second / "reg:5000").mkdir(parents=True)
    assert host_dirs("reg:5000", [str(first), str(second)]) == [str(second / "reg:5000")]
    (second / "reg:5000" / "client.cert").write_text("x")
    with pytest.raises(InvalidArgument, match="missing key"):
        ssl_context("reg:5000", TLSConfig(certs_dirs=(str(first), str(second))))
    os.unlink(second / "reg:5000" / "client.cert")
    (second / "reg:5000" / "ca.crt").write_text("not a certificate")
    with pytest.raises(InvalidArgument, match="cannot load"):
        ssl_context("reg:5000", TLSConfig(certs_dirs=(str(second),)))
    context = ssl_context("insecure:1", TLSConfig(insecure=("insecure:1",)))
    assert not context.check_hostname


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(attempts=5, backoff=0.5, max_backoff=3.0)
    assert [policy.delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(0, "2") == 2.0


def test_error_wording() -> None:
    body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown tag=x"}]}
    response = httpx.Response(404, json=body)
    assert describe(response) == "manifest unknown: unknown tag=x"
    assert describe(httpx.Response(401)) == "unauthorized: authentication required"


def test_public_surface() -> None:
    for name in registry.__all__:
        assert hasattr(registry, name), name


def test_json_stream_yields_progress_then_errors() -> None:
    def operation(progress: registry.Progress) -> None:
        progress(event(EventKind.BLOB_START))
        progress(event(EventKind.BLOB_DONE))

    lines = list(registry.json_stream(operation))
    assert [line["status"] for line in lines] == ["Pulling fs layer", "Pull complete"]

    def failing(progress: registry.Progress) -> None:
        progress(event(EventKind.BLOB_START))
        raise registry.Unauthorized("unauthorized: authentication required")

    lines = list(registry.json_stream(failing))
    assert lines[-1] == {"errorDetail": {"message": "unauthorized: authentication required"},
                         "error": "unauthorized: authentication required"}

    def crashing(progress: registry.Progress) -> None:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        list(registry.json_stream(crashing))
