"""Push: blobs the registry lacks, then the manifest.

For each blob: HEAD (already there: skip), else a cross-repository mount
when the caller names a source repository on the same registry, else an
upload: monolithic (POST, then PUT with ``?digest=``) up to a threshold,
chunked above it (PATCH with ``Content-Range``, then PUT). The manifest goes
last, with its media type, so the registry never holds a manifest whose
blobs are missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import httpx

from isobox.errors import InvalidArgument, IsoboxError, NotFound
from isobox.images.content import ContentStore, DigestMismatch
from isobox.oci import digest as digests
from isobox.oci import image_spec as spec
from isobox.oci.reference import Reference
from isobox.registry._remote import Remote, failure
from isobox.registry.auth import repository_scope
from isobox.registry.errors import Unauthorized
from isobox.registry.parallel import run_all
from isobox.registry.progress import EventKind, Progress, ProgressEvent, no_progress

log = logging.getLogger(__name__)

DEFAULT_CHUNK_THRESHOLD = 8 << 20
DEFAULT_CHUNK_SIZE = 8 << 20
OCTET_STREAM = "application/octet-stream"
MountFrom = str | Mapping[str, str] | None


class _Aborted(Exception):
    """Another upload failed: this one stops."""


class Pusher:
    """One push. ``mount_from`` names, for every blob (a str) or per digest
    (a mapping), a repository on the same registry that already has it."""

    def __init__(self, remote: Remote, ref: Reference, store: ContentStore, *,
                 progress: Progress | None = None, workers: int = 3,
                 mount_from: MountFrom = None,
                 chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise InvalidArgument("chunk size must be positive")
        self.remote = remote
        self.ref = ref
        self.store = store
        self.progress: Progress = progress or no_progress
        self.workers = max(1, workers)
        self.mount_from = mount_from
        self.chunk_threshold = chunk_threshold
        self.chunk_size = chunk_size
        self.scopes = (repository_scope(ref.path, "pull", "push"),)
        self._abort = threading.Event()

    def emit(self, kind: EventKind, desc: spec.Descriptor | None = None, *,
             digest: str = "", current: int = 0, total: int = 0, detail: str = "") -> None:
        self.progress(ProgressEvent(
            kind, "push", self.ref.name, self.ref.tag or f"@{self.ref.digest}",
            digest=desc.digest if desc else digest, media_type=desc.media_type if desc else "",
            current=current, total=total or (desc.size if desc else 0), detail=detail))

    def run(self, manifest_digest: str) -> str:
        if self.ref.digest and self.ref.digest != manifest_digest:
            raise InvalidArgument(f"cannot push {manifest_digest} as {self.ref}: "
                                  "the reference pins another digest")
        raw = self.store.read(manifest_digest)
        media = spec.media_type_of(raw)
        self.emit(EventKind.RESOLVING)
        if media in spec.INDEX_TYPES:
            index = spec.decode_index(raw)
            missing = [d.digest for d in index.manifests if not self.store.exists(d.digest)]
            if missing:
                raise NotFound(f"cannot push index {manifest_digest}: manifests missing "
                               f"from the content store: {', '.join(missing)}")
            for entry in index.manifests:
                child = self.store.read(entry.digest)
                self._image(spec.decode_manifest(child))
                self._put_manifest(entry.digest, child, entry.media_type)
        elif media in spec.MANIFEST_TYPES:
            self._image(spec.decode_manifest(raw))
        else:
            raise InvalidArgument(f"cannot push {manifest_digest}: media type {media!r} "
                                  "is not an image manifest or index")
        self._put_manifest(self.ref.tag or manifest_digest, raw, media)
        self.emit(EventKind.MANIFEST, digest=manifest_digest, total=len(raw))
        return manifest_digest

    def _image(self, manifest: spec.Manifest) -> None:
        blobs = list({d.digest: d for d in [manifest.config, *manifest.layers]}.values())
        missing = [d.digest for d in blobs if not self.store.exists(d.digest)]
        if missing:
            raise NotFound(f"cannot push {self.ref.familiar()}: blobs missing from the "
                           f"content store: {', '.join(missing)}")
        for desc in blobs:
            self.emit(EventKind.BLOB_START, desc)
        run_all(self._blob, blobs, workers=self.workers, abort=self._abort, name="isobox-push")

    def _source(self, digest: str) -> str | None:
        if isinstance(self.mount_from, str):
            source: str | None = self.mount_from
        elif self.mount_from is not None:
            source = self.mount_from.get(digest)
        else:
            source = None
        return source if source and source != self.ref.path else None

    def _blob(self, desc: spec.Descriptor) -> None:
        if self._abort.is_set():
            raise _Aborted(desc.digest)
        size = self.store.size(desc.digest)
        if size != desc.size:
            raise InvalidArgument(f"blob {desc.digest} is {size} bytes in the content store, "
                                  f"its descriptor says {desc.size}")
        path = f"/v2/{self.ref.path}/blobs/{desc.digest}"
        head = self.remote.request("HEAD", path, scopes=self.scopes)
        if head.status_code == 200:
            self.emit(EventKind.BLOB_EXISTS, desc)
            return
        if head.status_code != 404:
            raise self._error(head, f"checking blob {desc.digest}")
        location = self._start_upload(desc)
        if location is None:
            return  # mounted
        if size <= self.chunk_threshold:
            done = self.remote.request(
                "PUT", location.copy_merge_params({"digest": desc.digest}), scopes=self.scopes,
                headers={"Content-Type": OCTET_STREAM}, content=self.store.read(desc.digest))
        else:
            location = self._patch_chunks(desc, location)
            done = self.remote.request(
                "PUT", location.copy_merge_params({"digest": desc.digest}), scopes=self.scopes,
                headers={"Content-Type": OCTET_STREAM}, content=b"")
        if done.status_code != 201:
            raise self._error(done, f"uploading blob {desc.digest}")
        self.emit(EventKind.BLOB_PROGRESS, desc, current=size)
        self.emit(EventKind.BLOB_DONE, desc, current=size)

    def _start_upload(self, desc: spec.Descriptor) -> httpx.URL | None:
        """The upload session's URL, or None when the blob was mounted."""
        uploads = f"/v2/{self.ref.path}/blobs/uploads/"
        source = self._source(desc.digest)
        if source is not None:
            response = self.remote.request(
                "POST", self.remote.url(uploads, {"mount": desc.digest, "from": source}),
                scopes=(*self.scopes, repository_scope(source, "pull")), content=b"")
            if response.status_code == 201:
                self.emit(EventKind.BLOB_MOUNTED, desc, detail=source)
                return None
            log.debug("mount of %s from %s refused (%d); uploading", desc.digest, source,
                      response.status_code)
        else:
            response = self.remote.request("POST", uploads, scopes=self.scopes, content=b"")
        location = response.headers.get("location")
        if response.status_code != 202 or not location:
            raise self._error(response, f"starting the upload of {desc.digest}")
        return self.remote.resolve(location, response.request.url)

    def _patch_chunks(self, desc: spec.Descriptor, location: httpx.URL) -> httpx.URL:
        offset = 0
        with self.store.open(desc.digest) as blob:
            while chunk := blob.read(self.chunk_size):
                if self._abort.is_set():
                    raise _Aborted(desc.digest)
                end = offset + len(chunk) - 1
                response = self.remote.request(
                    "PATCH", location, scopes=self.scopes, content=chunk,
                    headers={"Content-Type": OCTET_STREAM, "Content-Range": f"{offset}-{end}"})
                if response.status_code != 202:
                    raise self._error(response, f"uploading blob {desc.digest} at {offset}")
                offset = end + 1
                next_location = response.headers.get("location")
                if next_location:
                    location = self.remote.resolve(next_location, response.request.url)
                self.emit(EventKind.BLOB_PROGRESS, desc, current=offset)
        return location

    def _put_manifest(self, reference: str, raw: bytes, media: str) -> None:
        response = self.remote.request(
            "PUT", f"/v2/{self.ref.path}/manifests/{reference}", scopes=self.scopes,
            headers={"Content-Type": media}, content=raw)
        if response.status_code not in (200, 201):
            raise self._error(response, f"putting manifest {reference}")
        announced = response.headers.get("docker-content-digest")
        if announced:
            algo = announced.partition(":")[0]
            if algo in ("sha256", "sha512") and digests.of_bytes(raw, algo) != announced:
                raise DigestMismatch(f"registry stored manifest {reference} as {announced}, "
                                     "which is not the digest of what we sent")

    def _error(self, response: httpx.Response, doing: str) -> IsoboxError:
        error = failure(response, f"{doing} to {self.ref.name}")
        if response.status_code == 401:
            return Unauthorized(f"{error}; log in with 'isobox login {self.ref.domain}'")
        return error


def push(remote: Remote, ref: Reference, store: ContentStore, manifest_digest: str, *,
         progress: Progress | None = None, workers: int = 3, mount_from: MountFrom = None,
         chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD,
         chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    return Pusher(remote, ref, store, progress=progress, workers=workers,
                  mount_from=mount_from, chunk_threshold=chunk_threshold,
                  chunk_size=chunk_size).run(manifest_digest)
