"""Pull: resolve a reference, pick the platform, fetch into the content store.

Blobs are fetched first (the config, then the layers a few at a time), each
resumed from what an earlier attempt left in the ingest area; the manifest
(and the index) are stored last, so a manifest in the store means its image
is complete. Every byte is verified: blobs by the store on commit, manifests
against the digest asked for or the one the registry announced.

``on_layers``, called once the config is stored and before any layer is
fetched, may return a ``BlobFeed`` per layer digest: each layer's feed is
served while the layer downloads (so the caller can unpack it at the same
time), told when it is committed, and failed when it will not be.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import httpx

from isobox.errors import InvalidArgument, IsoboxError, NotFound, Unavailable
from isobox.images.content import BlobFeed, ContentStore, DigestMismatch, Writer
from isobox.oci import digest as digests
from isobox.oci import image_spec as spec
from isobox.oci.reference import Reference
from isobox.registry._http import describe_transport_error, is_retryable
from isobox.registry._remote import Remote, failure
from isobox.registry.auth import repository_scope
from isobox.registry.errors import Forbidden, Unauthorized, describe, error_codes
from isobox.registry.parallel import run_all
from isobox.registry.progress import EventKind, Progress, ProgressEvent, no_progress

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join([spec.OCI_INDEX, spec.DOCKER_MANIFEST_LIST, spec.OCI_MANIFEST,
                             spec.DOCKER_MANIFEST, spec.DOCKER_SCHEMA1_SIGNED,
                             spec.DOCKER_SCHEMA1])
MAX_MANIFEST_SIZE = 4 << 20
SCHEMA1_MESSAGE = ("schema1 manifests are not supported; re-push the image with a "
                   "current Docker")
PlatformSpec = tuple[str, str, str | None]
#: Called with the manifest and config before the layers are fetched; returns
#: the feeds (by layer digest) to serve while they download.
LayerFeeds = Callable[[spec.Manifest, spec.ImageConfig], Mapping[str, BlobFeed]]


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    #: The image manifest for the chosen platform.
    manifest_digest: str
    #: The index (manifest list) the tag pointed at, if it did.
    index_digest: str | None
    manifest: spec.Manifest
    media_type: str
    config_digest: str
    config: spec.ImageConfig
    layers: tuple[spec.Descriptor, ...]


class _Aborted(Exception):
    """Another download failed: this one stops (its partial data stays)."""


def format_platform(platform: spec.Platform | PlatformSpec) -> str:
    if isinstance(platform, spec.Platform):
        parts = [platform.os, platform.architecture, platform.variant]
    else:
        parts = list(platform)
    return "/".join(p for p in parts if p)


def select_platform(index: spec.Index, platform: PlatformSpec, what: str) -> spec.Descriptor:
    """The index entry for ``platform`` (an exact variant beats none)."""
    os_, arch, variant = platform
    found = [d for d in index.manifests if d.media_type in spec.MANIFEST_TYPES
             and spec.platform_matches(d.platform, os_, arch, variant)]
    if found:
        found.sort(key=lambda d: d.platform is None or d.platform.variant != variant)
        return found[0]
    available = sorted({format_platform(d.platform) for d in index.manifests
                        if d.platform is not None and d.platform.os != "unknown"})
    raise NotFound(f"no matching manifest for {format_platform(platform)} in the manifest "
                   f"list entries of {what} (available: {', '.join(available) or 'none'})")


def _content_range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", header or "")
    return int(match.group(1)) if match else None


class Puller:
    """One pull. ``workers`` bounds the parallel blob downloads."""

    def __init__(self, remote: Remote, ref: Reference, store: ContentStore, *,
                 progress: Progress | None = None, workers: int = 3,
                 on_layers: LayerFeeds | None = None) -> None:
        self.remote = remote
        self.on_layers = on_layers
        self._feeds: Mapping[str, BlobFeed] = {}
        self.ref = ref
        self.store = store
        self.progress: Progress = progress or no_progress
        self.workers = max(1, workers)
        self.scopes = (repository_scope(ref.path, "pull"),)
        self._abort = threading.Event()

    def emit(self, kind: EventKind, desc: spec.Descriptor | None = None, *,
             digest: str = "", current: int = 0, total: int = 0) -> None:
        self.progress(ProgressEvent(
            kind, "pull", self.ref.path, self.ref.tag or f"@{self.ref.digest}",
            digest=desc.digest if desc else digest, media_type=desc.media_type if desc else "",
            current=current, total=total or (desc.size if desc else 0)))

    def run(self, platform: PlatformSpec) -> PullResult:
        self.emit(EventKind.RESOLVING)
        target = self.ref.digest or self._head(self.ref.tag or "latest")
        raw, digest, media = self._manifest(target or self.ref.tag or "latest", target, None)
        index_raw, index_digest = None, None
        if media in spec.INDEX_TYPES:
            index_raw, index_digest = raw, digest
            entry = select_platform(spec.decode_index(raw), platform, self.ref.familiar())
            raw, digest, media = self._manifest(entry.digest, entry.digest, entry.size)
        if media not in spec.MANIFEST_TYPES:
            raise InvalidArgument(f"{self.ref.familiar()}: unsupported manifest media type "
                                  f"{media!r}")
        manifest = spec.decode_manifest(raw)
        self.emit(EventKind.RESOLVED, digest=digest)
        if self.on_layers is None:
            self._blobs([manifest.config, *manifest.layers])
            config = spec.decode_config(self.store.read(manifest.config.digest))
        else:
            self._blobs([manifest.config])
            config = spec.decode_config(self.store.read(manifest.config.digest))
            self._feeds = self.on_layers(manifest, config)
            self._blobs(list(manifest.layers))
        if (config.os, config.architecture) != platform[:2]:
            log.warning("image %s is %s/%s, not the %s asked for", self.ref.familiar(),
                        config.os, config.architecture, format_platform(platform))
        self.store.put(raw, digest)
        if index_raw is not None and index_digest is not None:
            self.store.put(index_raw, index_digest)
        self.emit(EventKind.MANIFEST, digest=index_digest or digest, total=len(raw))
        return PullResult(self.ref, digest, index_digest, manifest, media,
                          manifest.config.digest, config, tuple(manifest.layers))

    # manifests

    def _head(self, tag: str) -> str | None:
        """The digest a tag points at, from a HEAD; None when the registry
        does not say (the GET by tag then tells, or explains the refusal)."""
        response = self.remote.request("HEAD", f"/v2/{self.ref.path}/manifests/{tag}",
                                       scopes=self.scopes, headers={"Accept": MANIFEST_ACCEPT})
        announced = response.headers.get("docker-content-digest", "")
        if response.status_code == 200 and announced:
            try:
                return digests.validate(announced)
            except InvalidArgument:
                log.debug("registry announced an invalid digest %r", announced)
        return None

    def _manifest(self, reference: str, expected: str | None,
                  size: int | None) -> tuple[bytes, str, str]:
        if expected is not None and self.store.exists(expected):
            stored = self.store.read(expected)  # verified when it was stored
            return stored, expected, spec.media_type_of(stored)
        response = self.remote.request("GET", f"/v2/{self.ref.path}/manifests/{reference}",
                                       scopes=self.scopes, stream=True,
                                       headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code != 200:
            raise self._manifest_error(response, reference)
        try:
            raw = bytearray()
            for chunk in raw_chunks(response):
                raw += chunk
                if len(raw) > MAX_MANIFEST_SIZE:
                    raise InvalidArgument(f"manifest for {self.ref.familiar()} is larger "
                                          f"than {MAX_MANIFEST_SIZE} bytes")
        except httpx.TransportError as exc:
            raise Unavailable(f"reading manifest of {self.ref.familiar()}: "
                              f"{describe_transport_error(exc)}") from exc
        finally:
            response.close()
        announced = response.headers.get("docker-content-digest", "")
        want = expected or (announced if _valid(announced) else None)
        actual = digests.of_bytes(bytes(raw), want.partition(":")[0] if want else "sha256")
        if want is not None and actual != want:
            raise DigestMismatch(f"manifest for {self.ref.familiar()}: registry sent content "
                                 f"with digest {actual}, want {want}")
        if size is not None and len(raw) != size:
            raise DigestMismatch(f"manifest {actual}: got {len(raw)} bytes, want {size}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        media = spec.media_type_of(bytes(raw))
        if media in spec.SCHEMA1_TYPES or content_type in spec.SCHEMA1_TYPES:
            raise InvalidArgument(f"{self.ref.familiar()}: {SCHEMA1_MESSAGE}")
        return bytes(raw), actual, media

    def _manifest_error(self, response: httpx.Response, reference: str) -> IsoboxError:
        error = failure(response, f"fetching manifest {reference} of {self.ref.name}")
        name = self.ref.familiar_name
        denied = (f"pull access denied for {name}, repository does not exist or may "
                  f"require 'docker login': {describe(response)}")
        codes = error_codes(response)
        if response.status_code == 401:
            return Unauthorized(denied)
        if response.status_code == 403:
            return Forbidden(denied)
        if response.status_code == 404:
            if "NAME_UNKNOWN" in codes:
                return NotFound(denied)
            shown = f"{name}@{reference}" if ":" in reference else f"{name}:{reference}"
            return NotFound(f"manifest for {shown} not found: {describe(response)}")
        return error

    # blobs

    def _blobs(self, descs: list[spec.Descriptor]) -> None:
        todo: list[spec.Descriptor] = []
        for desc in {d.digest: d for d in descs}.values():
            if self.store.exists(desc.digest):
                feed = self._feeds.get(desc.digest)
                if feed is not None:
                    feed.committed(self.store.path(desc.digest), self.store.size(desc.digest))
                self.emit(EventKind.BLOB_EXISTS, desc)
            else:
                todo.append(desc)
                self.emit(EventKind.BLOB_START, desc)
        run_all(self._blob, todo, workers=self.workers, abort=self._abort, name="isobox-pull")

    def _blob(self, desc: spec.Descriptor) -> None:
        with self.store.writer(desc.digest, desc.size,
                               feed=self._feeds.get(desc.digest)) as writer:
            if writer.committed:
                self.emit(EventKind.BLOB_EXISTS, desc)
                return
            attempt, may_restart = 0, True
            while True:
                started_at = writer.offset
                try:
                    self._download(writer, desc)
                except httpx.TransportError as exc:
                    attempt += 1
                    if not is_retryable(exc) or attempt >= self.remote.pool.retry.attempts:
                        raise Unavailable(f"downloading {desc.digest} of {self.ref.familiar()}: "
                                          f"{describe_transport_error(exc)}") from exc
                    log.debug("blob %s broke off at %d (%s), resuming", desc.digest,
                              writer.offset, exc)
                    self.remote.pool.pause(attempt - 1)
                    continue
                try:
                    writer.commit()
                except DigestMismatch:
                    if started_at == 0 or not may_restart:
                        raise
                    log.debug("resumed blob %s did not verify; downloading it again", desc.digest)
                    writer.reset()
                    may_restart = False
                    continue
                self.emit(EventKind.BLOB_DONE, desc, current=desc.size)
                return

    def _download(self, writer: Writer, desc: spec.Descriptor) -> None:
        if writer.offset and writer.offset == desc.size:
            return  # complete from an earlier attempt: commit decides
        headers = {"Accept-Encoding": "identity"}
        if writer.offset:
            headers["Range"] = f"bytes={writer.offset}-"
        response = self.remote.request("GET", f"/v2/{self.ref.path}/blobs/{desc.digest}",
                                       scopes=self.scopes, headers=headers, stream=True)
        try:
            status = response.status_code
            if writer.offset and status == 206:
                start = _content_range_start(response.headers.get("content-range"))
                if start is not None and start != writer.offset:
                    writer.reset()  # not where we stopped: take the whole blob
                    response.close()
                    return self._download(writer, desc)
            elif writer.offset and status == 416:
                writer.reset()
                response.close()
                return self._download(writer, desc)
            elif status == 200:
                if writer.offset:
                    writer.reset()  # the server ignored the range
            else:
                raise self._blob_error(response, desc)
            self._copy(response, writer, desc)
        finally:
            response.close()

    def _copy(self, response: httpx.Response, writer: Writer, desc: spec.Descriptor) -> None:
        for chunk in raw_chunks(response):
            if self._abort.is_set():
                raise _Aborted(desc.digest)
            writer.write(chunk)
            self.emit(EventKind.BLOB_PROGRESS, desc, current=writer.offset)

    def _blob_error(self, response: httpx.Response, desc: spec.Descriptor) -> IsoboxError:
        error = failure(response, f"fetching blob {desc.digest} of {self.ref.name}")
        if response.status_code == 404:
            return NotFound(f"blob {desc.digest} of {self.ref.familiar()} not found: "
                            f"{describe(response)}")
        return error


def raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as sent, never content-decoded (a digest covers the stored
    bytes, even when a storage server labels a .tar.gz with Content-Encoding),
    in the pieces the network delivers: nothing waits in a buffer, so a
    broken connection loses no byte already received."""
    try:
        yield from response.iter_raw()
    except httpx.StreamConsumed:
        yield response.content  # a transport that handed over a body already read


def _valid(text: str) -> bool:
    try:
        digests.validate(text)
    except InvalidArgument:
        return False
    return True


def pull(remote: Remote, ref: Reference, store: ContentStore, *,
         platform: PlatformSpec = ("linux", "amd64", None),
         progress: Progress | None = None, workers: int = 3,
         on_layers: LayerFeeds | None = None) -> PullResult:
    return Puller(remote, ref, store, progress=progress, workers=workers,
                  on_layers=on_layers).run(platform)
