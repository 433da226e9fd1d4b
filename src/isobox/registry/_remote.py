"""One registry as the distribution API sees it: its base URL (HTTPS, or
plain HTTP where allowed), what it asks for authentication, and requests
that answer its challenges."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import httpx

from isobox.errors import IsoboxError, Unavailable
from isobox.registry._http import HttpPool, is_retryable
from isobox.registry.auth import Authenticator, Challenge, parse_challenge
from isobox.registry.errors import TLSVerificationError, for_status
from isobox.registry.tls import allows_plain_http

#: Where the API of a domain lives when it is not the domain itself.
API_HOSTS = {"docker.io": "registry-1.docker.io"}


def api_host(domain: str) -> str:
    return API_HOSTS.get(domain, domain)


def failure(response: httpx.Response, context: str) -> IsoboxError:
    """Read what is left of a refused response, close it, and say why."""
    try:
        response.read()
    except httpx.HTTPError:
        pass
    finally:
        response.close()
    return for_status(response, context)


class Remote:
    """Requests to one registry, authenticated as it asks. Thread-safe."""

    def __init__(self, domain: str, pool: HttpPool, auth: Authenticator) -> None:
        self.domain = domain
        self.netloc = api_host(domain)
        self.pool = pool
        self._auth = auth
        self._base: str | None = None
        self._challenge: Challenge | None = None
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        """``https://host[:port]`` (or ``http://``), found by pinging ``/v2/``."""
        with self._lock:
            if self._base is None:
                self._ping()
            assert self._base is not None
            return self._base

    @property
    def challenge(self) -> Challenge | None:
        return self._challenge

    def _ping(self) -> None:
        schemes = ["https"]
        if allows_plain_http(self.netloc, self.pool.tls):
            schemes.append("http")
        attempt = 0
        while True:
            errors: list[Unavailable] = []
            for scheme in schemes:
                request = httpx.Request("GET", f"{scheme}://{self.netloc}/v2/")
                try:
                    response = self.pool.send(request, retry=False)
                except TLSVerificationError:
                    raise  # it speaks TLS: falling back to HTTP would hide the problem
                except Unavailable as exc:
                    errors.append(exc)
                    continue
                self._base = f"{scheme}://{self.netloc}"
                if response.status_code == 401:
                    self._challenge = _host_level(
                        parse_challenge(response.headers.get("www-authenticate")))
                return
            attempt += 1
            if attempt >= self.pool.retry.attempts or not any(
                    isinstance(e.__cause__, httpx.TransportError) and is_retryable(e.__cause__)
                    for e in errors):
                raise Unavailable(f"registry {self.domain} is unreachable: "
                                  + "; ".join(str(e) for e in errors)) from errors[-1]
            self.pool.pause(attempt - 1)

    def url(self, path: str, params: Mapping[str, str] | None = None) -> httpx.URL:
        url = httpx.URL(self.base + path)
        return url.copy_merge_params(params) if params else url

    def resolve(self, location: str, relative_to: httpx.URL | None = None) -> httpx.URL:
        """An upload ``Location`` header as an absolute URL."""
        return (relative_to or httpx.URL(self.base + "/")).join(location)

    def request(self, method: str, target: str | httpx.URL, *, scopes: Iterable[str],
                headers: Mapping[str, str] | None = None, content: bytes | None = None,
                stream: bool = False) -> httpx.Response:
        """Send, answering a 401 once with fresh credentials or a new token.
        ``target`` is a path below the base (``/v2/...``) or a full URL."""
        url = self.url(target) if isinstance(target, str) else target
        scopes = tuple(scopes)
        challenge = self._challenge
        refreshed = False
        while True:
            request_headers = httpx.Headers(headers or {})
            authorization = self._auth.authorization(self.domain, challenge, scopes,
                                                     refresh=refreshed)
            if authorization is not None:
                request_headers["Authorization"] = authorization
            request = httpx.Request(method, url, headers=request_headers, content=content)
            response = self.pool.send(request, stream=stream)
            if response.status_code != 401 or refreshed:
                return response
            offered = parse_challenge(response.headers.get("www-authenticate"))
            if offered is None:
                return response
            if offered.scheme == "basic" and (
                    authorization is not None or self._auth.lookup(self.domain) is None):
                return response  # the same credentials again would not help
            with self._lock:
                self._challenge = _host_level(offered)
            challenge = offered
            refreshed = True
            response.close()


def _host_level(challenge: Challenge | None) -> Challenge | None:
    """A challenge without the scope of the request that drew it."""
    if challenge is None:
        return None
    return Challenge(challenge.scheme,
                     {k: v for k, v in challenge.params.items() if k != "scope"})
