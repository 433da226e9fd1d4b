"""The registry client the engine uses: pull, push, login, logout.

Everything it needs comes in through the constructor (options, the
credential store, an httpx transport for hermetic tests, a sleep function
for the back-off): no global state. One client may serve many pulls and
pushes, from several threads; it keeps connections and tokens between them.
Close it (or use it as a context manager) when done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import httpx

from isobox.errors import InvalidArgument
from isobox.images.content import ContentStore
from isobox.oci.reference import DEFAULT_DOMAIN, LEGACY_DOMAINS, Reference
from isobox.registry._http import HttpPool, RetryPolicy
from isobox.registry._remote import Remote, failure
from isobox.registry.auth import Authenticator
from isobox.registry.credentials import Credentials, CredentialStore
from isobox.registry.errors import Unauthorized
from isobox.registry.progress import Progress
from isobox.registry.pull import LayerFeeds, PlatformSpec, PullResult, pull
from isobox.registry.push import DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_THRESHOLD, MountFrom, push
from isobox.registry.tls import DOCKER_CERTS_DIR, SYSTEM_CA_BUNDLE, TLSConfig, allows_plain_http

DEFAULT_PLATFORM: PlatformSpec = ("linux", "amd64", None)


@dataclass(frozen=True)
class RegistryOptions:
    #: Registries reachable over plain HTTP (and unverified HTTPS): ``host``,
    #: ``host:port`` or a CIDR. Loopback registries may always use plain HTTP.
    insecure: tuple[str, ...] = ()
    #: Folders holding ``<host[:port]>/ca.crt``, ``client.cert``, ``client.key``.
    certs_dirs: tuple[str, ...] = (DOCKER_CERTS_DIR,)
    ca_bundle: str | None = SYSTEM_CA_BUNDLE
    #: Tries per request (the first included) on 5xx, 429 and broken connections.
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 10.0
    #: Blobs transferred at once.
    max_concurrent: int = 3
    #: Blobs above this size are uploaded in chunks of ``chunk_size``.
    chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD
    chunk_size: int = DEFAULT_CHUNK_SIZE
    timeout: float = 60.0
    user_agent: str = "isobox/0.1"


def certs_dirs_for(config_dir: str) -> tuple[str, ...]:
    """isobox's own certs.d first, then Docker's."""
    return (f"{config_dir.rstrip('/')}/certs.d", DOCKER_CERTS_DIR)


def registry_domain(registry: str) -> str:
    """``https://index.docker.io/v1/``, ``docker.io`` -> ``docker.io``;
    ``http://host:5000/`` -> ``host:5000``."""
    text = registry.strip()
    for prefix in ("https://", "http://"):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    host = text.split("/", 1)[0]
    if not host:
        raise InvalidArgument(f"invalid registry address {registry!r}")
    if host.lower() in LEGACY_DOMAINS or host.lower() == DEFAULT_DOMAIN:
        return DEFAULT_DOMAIN
    return host


class RegistryClient:
    def __init__(self, options: RegistryOptions | None = None, *,
                 credentials: CredentialStore | None = None,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options or RegistryOptions()
        self.credentials = credentials
        opts = self.options
        self.tls = TLSConfig(certs_dirs=tuple(opts.certs_dirs), ca_bundle=opts.ca_bundle,
                             insecure=tuple(opts.insecure))
        self._pool = HttpPool(
            tls=self.tls, retry=RetryPolicy(max(1, opts.retries), opts.backoff, opts.max_backoff),
            transport=transport, sleep=sleep, timeout=opts.timeout, user_agent=opts.user_agent)
        self._auth = self._authenticator(self._lookup)
        self._remotes: dict[str, Remote] = {}
        self._lock = threading.Lock()

    def _lookup(self, domain: str) -> Credentials | None:
        return self.credentials.get(domain) if self.credentials is not None else None

    def _authenticator(self, lookup: Callable[[str], Credentials | None]) -> Authenticator:
        return Authenticator(lookup, lambda request: self._pool.send(request),
                             plain_http_ok=lambda netloc: allows_plain_http(netloc, self.tls))

    def remote(self, domain: str) -> Remote:
        with self._lock:
            found = self._remotes.get(domain)
            if found is None:
                found = self._remotes[domain] = Remote(domain, self._pool, self._auth)
            return found

    def pull(self, ref: Reference, store: ContentStore, *,
             platform: PlatformSpec = DEFAULT_PLATFORM,
             progress: Progress | None = None,
             on_layers: LayerFeeds | None = None) -> PullResult:
        """Fetch ``ref`` for ``platform`` into ``store``; see PullResult.
        ``on_layers``: feeds to serve the layers through as they download
        (see ``isobox.registry.pull``)."""
        return pull(self.remote(ref.domain), ref, store, platform=platform,
                    progress=progress, workers=self.options.max_concurrent,
                    on_layers=on_layers)

    def push(self, ref: Reference, store: ContentStore, manifest_digest: str, *,
             mount_from: MountFrom = None, progress: Progress | None = None) -> str:
        """Upload the image (manifest or index) ``manifest_digest`` from ``store``
        as ``ref``; returns the manifest digest. ``mount_from`` names a
        repository (path, e.g. ``library/base``) on the same registry to mount
        blobs from: one for all blobs, or a mapping per digest."""
        return push(self.remote(ref.domain), ref, store, manifest_digest,
                    progress=progress, workers=self.options.max_concurrent,
                    mount_from=mount_from, chunk_threshold=self.options.chunk_threshold,
                    chunk_size=self.options.chunk_size)

    def login(self, registry: str, username: str, password: str) -> None:
        """Check the credentials against the registry, then store them.
        Raises Unauthorized when the registry refuses them."""
        if self.credentials is None:
            raise InvalidArgument("login needs a credential store")
        if not username:
            raise InvalidArgument("login needs a username")
        domain = registry_domain(registry)
        creds = Credentials(username, password)
        trial = Remote(domain, self._pool, self._authenticator(lambda _: creds))
        response = trial.request("GET", "/v2/", scopes=())
        if response.status_code == 401:
            failure(response, f"logging in to {domain}")
            raise Unauthorized(f"login to {domain} failed: unauthorized: incorrect username "
                               "or password")
        if response.status_code != 200:
            raise failure(response, f"logging in to {domain}")
        self.credentials.store(domain, creds)
        self._forget(domain)

    def logout(self, registry: str) -> bool:
        """Forget the stored credentials; False when there were none."""
        if self.credentials is None:
            raise InvalidArgument("logout needs a credential store")
        domain = registry_domain(registry)
        removed = self.credentials.erase(domain)
        self._forget(domain)
        return removed

    def _forget(self, domain: str) -> None:
        with self._lock:
            self._remotes.pop(domain, None)
        self._auth.forget()

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
