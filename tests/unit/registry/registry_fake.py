"""An in-memory registry behind httpx.MockTransport: enough of the
distribution API (manifests, blobs, uploads, mounts, ranges, Basic and
Bearer auth, redirects to a storage host) to test the client hermetically.

Faults are one-shot callables tried before routing: return a response (or
raise an httpx exception) to take over a request, None to pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

Fault = Callable[[httpx.Request], "httpx.Response | None"]
AUTH_HOST = "auth.test"
STORAGE_HOST = "storage.test"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    return httpx.Response(status, content=body,
                          headers={"Content-Type": "application/json", **headers})


class BrokenStream(httpx.SyncByteStream):
    """Yields ``data`` then fails like a reset connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset by peer")


@dataclass
class FakeRegistry:
    host: str = "registry.test"
    auth: str | None = None  # None, "basic" or "bearer"
    users: dict[str, str] = field(default_factory=lambda: {"alice": "secret"})
    token_field: str = "token"
    honour_range: bool = True
    redirect_blobs: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=dict)
    manifests: dict[str, dict[str, tuple[bytes, str]]] = field(default_factory=dict)
    uploads: dict[str, tuple[str, bytearray]] = field(default_factory=dict)
    tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    # ------------------------------------------------------------ setup

    def add_blob(self, repo: str, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256(data)
        self.blobs[digest] = data
        self.links.setdefault(repo, set()).add(digest)
        return digest

    def add_manifest(self, repo: str, ref: str, raw: bytes, media: str) -> str:
        digest = sha256(raw)
        repo_manifests = self.manifests.setdefault(repo, {})
        repo_manifests[ref] = (raw, media)
        repo_manifests[digest] = (raw, media)
        self.links.setdefault(repo, set())
        return digest

    def add_image(self, repo: str, tag: str, image: object) -> str:
        for digest, data in image.blobs.items():  # type: ignore[attr-defined]
            self.add_blob(repo, data, digest)
        return self.add_manifest(repo, tag, image.manifest,  # type: ignore[attr-defined]
                                 image.media_type)  # type: ignore[attr-defined]

    def fail(self, times: int, when: Callable[[httpx.Request], bool],
             answer: Callable[[httpx.Request], httpx.Response]) -> None:
        """Take over the next ``times`` requests matching ``when``."""
        left = [times]

        def fault(request: httpx.Request) -> httpx.Response | None:
            if left[0] > 0 and when(request):
                left[0] -= 1
                return answer(request)
            return None

        self.faults.append(fault)

    def seen(self, method: str, pattern: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if r.method == method and re.search(pattern, str(r.url))]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # ------------------------------------------------------------ routing

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for fault in list(self.faults):
            answer = fault(request)
            if answer is not None:
                return answer
        if request.url.host == AUTH_HOST:
            return self._token(request)
        if request.url.host == STORAGE_HOST:
            return self._serve_blob(request, request.url.path.lstrip("/"))
        path = request.url.path
        match = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/(.+)", path)
        denied = self._check_auth(request, match.group(1) if match else None)
        if denied is not None:
            return denied
        if path == "/v2/":
            return httpx.Response(200, json={})
        if match is None:
            return error(404, "NOT_FOUND", "not found")
        repo, kind, rest = match.groups()
        if kind == "manifests":
            return self._manifest(request, repo, rest)
        if rest.startswith("uploads/"):
            return self._upload(request, repo, rest[len("uploads/"):])
        return self._blob(request, repo, rest)

    def _check_auth(self, request: httpx.Request, repo: str | None) -> httpx.Response | None:
        header = request.headers.get("authorization", "")
        if self.auth is None:
            return None
        if self.auth == "basic":
            if header.startswith("Basic ") and self._basic_ok(header):
                return None
            return error(401, "UNAUTHORIZED", "authentication required",
                         **{"WWW-Authenticate": 'Basic realm="fake"'})
        action = "pull" if request.method in ("GET", "HEAD") else "push"
        scope = f"repository:{repo}:{action}" if repo else ""
        granted = self.tokens.get(header.removeprefix("Bearer ")) if header else None
        if granted is not None and (not scope or any(
                g.rsplit(":", 1)[0] == scope.rsplit(":", 1)[0]
                and action in g.rsplit(":", 1)[1].split(",") for g in granted)):
            return None
        challenge = f'Bearer realm="https://{AUTH_HOST}/token",service="{self.host}"'
        if scope:
            challenge += f',scope="repository:{repo}:pull{",push" if action == "push" else ""}"'
        return error(401, "UNAUTHORIZED", "authentication required",
                     **{"WWW-Authenticate": challenge})

    def _basic_ok(self, header: str) -> bool:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return self.users.get(user) == password

    def _token(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("authorization", "")
        if header and not self._basic_ok(header):
            return error(401, "UNAUTHORIZED", "bad credentials")
        token = uuid.uuid4().hex
        self.tokens[token] = tuple(request.url.params.get_list("scope"))
        return httpx.Response(200, json={self.token_field: token, "expires_in": 300})

    # ------------------------------------------------------------ content

    def _manifest(self, request: httpx.Request, repo: str, ref: str) -> httpx.Response:
        if request.method == "PUT":
            media = request.headers.get("content-type", "")
            digest = self.add_manifest(repo, ref, request.content, media)
            return httpx.Response(201, headers={"Docker-Content-Digest": digest,
                                                "Location": f"/v2/{repo}/manifests/{digest}"})
        if repo not in self.manifests:
            return error(404, "NAME_UNKNOWN", "repository name not known to registry")
        found = self.manifests[repo].get(ref)
        if found is None:
            return error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        raw, media = found
        headers = {"Content-Type": media, "Docker-Content-Digest": sha256(raw)}
        if request.method == "HEAD":
            return httpx.Response(200, headers={**headers, "Content-Length": str(len(raw))})
        return httpx.Response(200, content=raw, headers=headers)

    def _blob(self, request: httpx.Request, repo: str, digest: str) -> httpx.Response:
        if digest not in self.links.get(repo, set()):
            return error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(self.blobs[digest])),
                                                "Docker-Content-Digest": digest})
        if self.redirect_blobs:
            return httpx.Response(307, headers={
                "Location": f"https://{STORAGE_HOST}/{digest}?signature=x"})
        return self._serve_blob(request, digest)

    def _serve_blob(self, request: httpx.Request, digest: str) -> httpx.Response:
        data = self.blobs.get(digest)
        if data is None:
            return httpx.Response(404)
        wanted = re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", ""))
        if wanted and self.honour_range:
            start = int(wanted.group(1))
            if start >= len(data):
                return httpx.Response(416)
            return httpx.Response(206, content=data[start:], headers={
                "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        return httpx.Response(200, content=data)

    def _upload(self, request: httpx.Request, repo: str, upload: str) -> httpx.Response:
        params = request.url.params
        if request.method == "POST":
            source, digest = params.get("from"), params.get("mount")
            if source and digest and digest in self.links.get(source, set()):
                self.links.setdefault(repo, set()).add(digest)
                return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{digest}",
                                                    "Docker-Content-Digest": digest})
            session = uuid.uuid4().hex
            self.uploads[session] = (repo, bytearray())
            return httpx.Response(202, headers={
                "Location": f"/v2/{repo}/blobs/uploads/{session}?_state=s0", "Range": "0-0"})
        if upload not in self.uploads:
            return error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        _, data = self.uploads[upload]
        if request.method == "PATCH":
            match = re.fullmatch(r"(\d+)-(\d+)", request.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != len(data):
                return httpx.Response(416)
            data += request.content
            return httpx.Response(202, headers={
                "Location": f"/v2/{repo}/blobs/uploads/{upload}?_state=s{len(data)}",
                "Range": f"0-{len(data) - 1}"})
        if request.method == "PUT":
            data += request.content
            digest = params.get("digest", "")
            if sha256(bytes(data)) != digest:
                return error(400, "DIGEST_INVALID", "digest did not match")
            del self.uploads[upload]
            self.add_blob(repo, bytes(data), digest)
            return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{digest}",
                                                "Docker-Content-Digest": digest})
        return httpx.Response(405)
