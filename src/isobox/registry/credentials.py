"""Registry credentials in Docker's ``config.json`` format.

    {"auths": {"127.0.0.1:5000": {"auth": "<base64 of user:password>"}}}

isobox keeps its own file (the engine passes ``<config dir>/config.json``),
written atomically with mode 0600; Docker's own file (``$DOCKER_CONFIG/
config.json`` or ``~/.docker/config.json``) is read as a fallback, never
written. Docker Hub's key is ``https://index.docker.io/v1/``; other
registries are keyed by ``host[:port]``, and keys written as URLs
(``https://host:5000/v1/``) match too.

Not handled: ``credsStore``/``credHelpers`` (external credential helper
programs) and ``identitytoken`` (OAuth refresh tokens).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isobox.errors import InvalidArgument
from isobox.linux.files import atomic_write

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print a password by accident
        return f"Credentials(username={self.username!r}, password=***)"


def registry_key(registry: str) -> str:
    """The config.json key for a registry (``docker.io`` -> Docker Hub's URL)."""
    host = _host_of(registry)
    return DOCKER_HUB_KEY if host in _HUB_HOSTS or not host else host


def _host_of(key: str) -> str:
    text = key.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    return text.split("/", 1)[0].lower()


def docker_config_path(environ: Mapping[str, str]) -> str:
    """Docker's own config file: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
    if environ.get("DOCKER_CONFIG"):
        return os.path.join(environ["DOCKER_CONFIG"], "config.json")
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".docker", "config.json")


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidArgument(f"cannot read credentials file {path}: {exc}") from exc
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"credentials file {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument(f"credentials file {path} is not a JSON object")
    return doc


def _decode_entry(entry: object, path: str, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            text = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"credentials file {path}: bad auth for {key}") from exc
        user, sep, password = text.partition(":")
        if not sep:
            raise InvalidArgument(f"credentials file {path}: auth for {key} is not user:password")
        return Credentials(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


class CredentialStore:
    """Reads ``path`` then each of ``fallbacks``; writes only ``path``."""

    def __init__(self, path: str, *, fallbacks: Sequence[str] = ()) -> None:
        self.path = path
        self.fallbacks = tuple(fallbacks)

    @classmethod
    def with_docker_fallback(cls, path: str, environ: Mapping[str, str]) -> CredentialStore:
        return cls(path, fallbacks=(docker_config_path(environ),))

    def get(self, registry: str) -> Credentials | None:
        """Credentials for ``registry`` (a domain as in references), or None."""
        wanted = registry_key(registry)
        for path in (self.path, *self.fallbacks):
            auths = _load(path).get("auths")
            if not isinstance(auths, dict):
                continue
            for key, entry in auths.items():
                if isinstance(key, str) and registry_key(key) == wanted:
                    found = _decode_entry(entry, path, key)
                    if found is not None:
                        return found
        return None

    def __call__(self, registry: str) -> Credentials | None:
        return self.get(registry)

    def store(self, registry: str, creds: Credentials) -> None:
        doc = _load(self.path)
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            auths = {}
        key = registry_key(registry)
        for old in [k for k in auths if isinstance(k, str) and registry_key(k) == key]:
            del auths[old]
        raw = f"{creds.username}:{creds.password}".encode()
        auths[key] = {"auth": base64.b64encode(raw).decode("ascii")}
        doc["auths"] = auths
        self._write(doc)

    def erase(self, registry: str) -> bool:
        """Forget ``registry``; False when nothing was stored for it."""
        doc = _load(self.path)
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            return False
        key = registry_key(registry)
        stale = [k for k in auths if isinstance(k, str) and registry_key(k) == key]
        if not stale:
            return False
        for old in stale:
            del auths[old]
        self._write(doc)
        return True

    def registries(self) -> list[str]:
        auths = _load(self.path).get("auths")
        return sorted(auths) if isinstance(auths, dict) else []

    def _write(self, doc: dict[str, Any]) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        data = json.dumps(doc, indent="\t").encode() + b"\n"
        atomic_write(self.path, data, mode=0o600)
        os.chmod(self.path, 0o600)
