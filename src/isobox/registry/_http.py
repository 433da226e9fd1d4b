"""HTTP plumbing under every registry call.

One httpx client per host, each with that host's TLS settings (or one
client over an injected transport, for tests); redirects followed by hand so
that credentials never go to another origin (blob GETs are often redirected
to object storage); bounded retries with exponential back-off on 5xx, 429
and broken connections. Foreign exceptions become isobox errors here.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from isobox.errors import Unavailable
from isobox.registry.errors import TLSVerificationError
from isobox.registry.tls import TLSConfig, ssl_context

log = logging.getLogger(__name__)

MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RETRY_ERRORS = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    #: Tries in all (the first one included).
    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 0)."""
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff)
        return float(min(self.backoff * (2 ** attempt), self.max_backoff))


def is_retryable(exc: httpx.TransportError) -> bool:
    """A broken or refused connection may work later; an unknown host name
    or an untrusted certificate will not."""
    if not isinstance(exc, _RETRY_ERRORS) or cert_failure(exc) is not None:
        return False
    return not any(isinstance(e, socket.gaierror) for e in _chain(exc))


def cert_failure(exc: BaseException) -> str | None:
    """The verification message if ``exc`` comes from an untrusted certificate."""
    chain = _chain(exc)
    for seen in chain:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or seen)
    for seen in chain:
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return str(seen)
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(found) < 10 and seen not in found:
        found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class HttpPool:
    """Sends requests: redirects by hand, retries, TLS per host. Thread-safe."""

    def __init__(self, *, tls: TLSConfig, retry: RetryPolicy,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 timeout: float = 60.0, user_agent: str = "isobox") -> None:
        self.tls = tls
        self.retry = retry
        self._transport = transport
        self._sleep = sleep
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 30.0))
        self._headers = {"User-Agent": user_agent}
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def client(self, url: httpx.URL) -> httpx.Client:
        key = "*" if self._transport is not None else url.netloc.decode("ascii")
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                if self._transport is not None:
                    transport = self._transport
                else:
                    transport = httpx.HTTPTransport(verify=ssl_context(key, self.tls))
                found = httpx.Client(transport=transport, timeout=self._timeout,
                                     follow_redirects=False)
                self._clients[key] = found
            return found

    def send(self, request: httpx.Request, *, stream: bool = False,
             retry: bool = True) -> httpx.Response:
        """Send, following redirects and retrying what may succeed later.

        Returns the last response (a 5xx too, once the tries are spent);
        with ``stream`` its body is still to be read and the caller closes it.
        Raises Unavailable when the registry cannot be reached at all.
        """
        for name, value in self._headers.items():
            request.headers.setdefault(name, value)
        attempts = self.retry.attempts if retry else 1
        attempt = 0
        while True:
            retry_after: str | None = None
            try:
                response = self._follow(request, stream)
            except httpx.TransportError as exc:
                failure = cert_failure(exc)
                if failure is not None:
                    raise self.tls_error(request.url, failure) from exc
                if not is_retryable(exc) or attempt + 1 >= attempts:
                    raise Unavailable(f'{request.method} "{request.url}": '
                                      f"{describe_transport_error(exc)}") from exc
                log.debug("%s %s failed (%s), retrying", request.method, request.url, exc)
            else:
                if response.status_code not in _RETRY_STATUS or attempt + 1 >= attempts:
                    return response
                log.debug("%s %s answered %d, retrying", request.method, request.url,
                          response.status_code)
                retry_after = response.headers.get("retry-after")
                response.close()
            self.pause(attempt, retry_after)
            attempt += 1

    def pause(self, attempt: int, retry_after: str | None = None) -> None:
        """Wait before try ``attempt + 1`` (attempt counts from 0)."""
        self._sleep(self.retry.delay(attempt, retry_after))

    def _follow(self, request: httpx.Request, stream: bool) -> httpx.Response:
        current = request
        for _ in range(MAX_REDIRECTS + 1):
            response = self.client(current.url).send(current, stream=True)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                if not stream:
                    try:
                        response.read()
                    finally:
                        response.close()
                return response
            response.close()
            current = redirect_request(current, response.status_code, location)
        raise Unavailable(f'{request.method} "{request.url}": more than {MAX_REDIRECTS} redirects')

    def tls_error(self, url: httpx.URL, failure: str) -> TLSVerificationError:
        netloc = url.netloc.decode("ascii")
        where = " or ".join(f"{base}/{netloc}/ca.crt" for base in self.tls.certs_dirs)
        return TLSVerificationError(
            f'Get "{url}": tls: failed to verify certificate: x509: {failure} '
            f"(trust the registry's CA by placing it in {where or 'a certs.d folder'}, "
            f"or list {netloc} as an insecure registry)")

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def redirect_request(request: httpx.Request, status: int, location: str) -> httpx.Request:
    """The request to send after a redirect. Authorization is dropped as soon
    as the target's origin (scheme, host, port) differs from the request's."""
    url = request.url.join(location)
    method = request.method
    keep_body = status in (307, 308)
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
    headers = httpx.Headers(request.headers)
    for name in ("host", "content-length", "transfer-encoding"):
        headers.pop(name, None)
    if not keep_body:
        headers.pop("content-type", None)
    if origin(url) != origin(request.url):
        headers.pop("authorization", None)
    content = request.content if keep_body else None
    return httpx.Request(method, url, headers=headers, content=content)


def describe_transport_error(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {text}"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out: {text}"
    return f"connection failed: {text}"
