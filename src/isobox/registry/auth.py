"""Registry authentication: anonymous, Basic, and the Bearer token flow.

A registry that wants credentials answers 401 with ``WWW-Authenticate``.
For ``Basic`` we send the stored user and password. For ``Bearer realm=...,
service=...,scope=...`` we ask the realm for a token covering the scopes the
operation needs (``repository:library/busybox:pull``), with Basic
credentials when we have some, and cache it per scope set until it expires.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx

from isobox.errors import InvalidArgument, Unavailable
from isobox.registry.credentials import Credentials
from isobox.registry.errors import Unauthorized, describe

#: Tokens without ``expires_in`` live 60 s (the distribution spec's default).
DEFAULT_TOKEN_LIFETIME = 60.0
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())


def parse_challenge(header: str | None) -> Challenge | None:
    """The first Basic or Bearer challenge of a ``WWW-Authenticate`` value."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            break
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme, params)


def repository_scope(path: str, *actions: str) -> str:
    return f"repository:{path}:{','.join(actions)}"


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


CredentialLookup = Callable[[str], Credentials | None]
Sender = Callable[[httpx.Request], httpx.Response]


class Authenticator:
    """Answers challenges for one or more registries. Thread-safe.

    ``lookup`` maps a registry domain (``docker.io``, ``host:5000``) to its
    credentials; ``send`` sends a request without authentication (the pool's).
    """

    def __init__(self, lookup: CredentialLookup, send: Sender, *,
                 plain_http_ok: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._send = send
        self._plain_http_ok = plain_http_ok or (lambda _: False)
        self._clock = clock
        self._tokens: dict[tuple[str, str, str, frozenset[str]], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def lookup(self, domain: str) -> Credentials | None:
        return self._lookup(domain)

    def authorization(self, domain: str, challenge: Challenge | None,
                      scopes: Iterable[str], *, refresh: bool = False) -> str | None:
        """The ``Authorization`` value for a request, or None for anonymous."""
        if challenge is None:
            return None
        creds = self._lookup(domain)
        if challenge.scheme == "basic":
            return basic_header(creds) if creds is not None else None
        wanted = frozenset(scopes) | frozenset(challenge.scopes)
        key = (domain, challenge.realm, challenge.service, wanted)
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and not refresh and cached[1] > self._clock():
            return f"Bearer {cached[0]}"
        token, lifetime = self.fetch_token(challenge, sorted(wanted), creds)
        # Renew a little early: a token that expires in flight costs a retry.
        expiry = self._clock() + max(lifetime - 10.0, lifetime / 2)
        with self._lock:
            self._tokens[key] = (token, expiry)
        return f"Bearer {token}"

    def fetch_token(self, challenge: Challenge, scopes: list[str],
                    creds: Credentials | None) -> tuple[str, float]:
        """GET the realm for a token; returns (token, lifetime in seconds)."""
        if not challenge.realm:
            raise InvalidArgument("registry sent a Bearer challenge without a realm")
        try:
            realm = httpx.URL(challenge.realm)
        except httpx.InvalidURL as exc:
            raise InvalidArgument(f"registry sent an invalid token realm "
                                  f"{challenge.realm!r}") from exc
        if realm.scheme not in ("https", "http"):
            raise InvalidArgument(f"token realm {challenge.realm!r} is not an http(s) URL")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params += [("scope", scope) for scope in scopes]
        headers = {}
        if creds is not None:
            if realm.scheme == "http" and not self._plain_http_ok(realm.netloc.decode("ascii")):
                raise Unauthorized(f"refusing to send credentials to {challenge.realm} "
                                   "over plain HTTP")
            params.append(("account", creds.username))
            headers["Authorization"] = basic_header(creds)
        request = httpx.Request("GET", realm.copy_merge_params(params), headers=headers)
        response = self._send(request)
        if response.status_code in (401, 403):
            what = "incorrect username or password" if creds else "authentication required"
            raise Unauthorized(f"unauthorized: {what} (token from {realm.host}: "
                               f"{describe(response)})")
        if response.status_code != 200:
            raise Unavailable(f"token server {realm.host} answered {response.status_code}: "
                              f"{describe(response)}")
        return _parse_token(response.content, realm.host)

    def forget(self) -> None:
        with self._lock:
            self._tokens.clear()


def _parse_token(body: bytes, host: str) -> tuple[str, float]:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise Unavailable(f"token server {host} sent invalid JSON") from exc
    if not isinstance(doc, dict):
        raise Unavailable(f"token server {host} sent no token")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unavailable(f"token server {host} sent no token")
    lifetime = doc.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return token, float(lifetime)

