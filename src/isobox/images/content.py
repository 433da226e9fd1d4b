"""The content store: blobs by digest, invisible until verified.

Layout under ``root``:
    blobs/<algo>/<hex>     committed blobs, read-only, content == digest
    ingest/<algo>-<hex>/   one in-progress write per digest: ``data`` (kept
                           across failures so a download can resume) and a
                           ``lock`` held with flock by the one writer

A writer streams into ingest, then ``commit`` checks size and digest, fsyncs
and renames into blobs: readers see the whole blob or none. Two processes
writing the same digest serialise on the lock; the second finds it committed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from typing import BinaryIO

from isobox.errors import InvalidArgument, NotFound
from isobox.oci import digest as digests


class DigestMismatch(InvalidArgument):
    pass


class Writer:
    """Streams one blob into the ingest area. Use as a context manager."""

    def __init__(self, store: ContentStore, expected: str, size: int | None) -> None:
        self.store = store
        self.expected = expected
        self.size = size
        algo, hexpart = digests.parse(expected)
        self.dir = os.path.join(store.root, "ingest", f"{algo}-{hexpart}")
        self._lock_fd = -1
        self._fd = -1
        self._hash = digests.hasher(expected)
        self.offset = 0
        #: True when the blob was already committed (nothing to write).
        self.committed = False

    def __enter__(self) -> Writer:
        os.makedirs(self.dir, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.dir, "lock"),
                                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        if self.store.exists(self.expected):
            self.committed = True
            return self
        data = os.path.join(self.dir, "data")
        self._fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Resume: re-hash what an earlier attempt left, continue from its end.
        while chunk := os.read(self._fd, 1 << 20):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if self.size is not None and self.offset > self.size:
            self.reset()
        return self

    def reset(self) -> None:
        """Drop partial data (the source cannot resume, or it was wrong)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = digests.hasher(self.expected)
        self.offset = 0

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._hash.update(chunk)
        self.offset += len(chunk)
        if self.size is not None and self.offset > self.size:
            raise DigestMismatch(f"blob {self.expected} is larger than its descriptor "
                                 f"says ({self.size} bytes)")

    def commit(self) -> None:
        if self.committed:
            return
        actual = f"{self.expected.partition(':')[0]}:{self._hash.hexdigest()}"
        if self.size is not None and self.offset != self.size:
            self._discard()
            raise DigestMismatch(f"blob {self.expected}: got {self.offset} bytes, "
                                 f"want {self.size}")
        if actual != self.expected:
            self._discard()
            raise DigestMismatch(f"blob digest mismatch: want {self.expected}, got {actual}")
        os.fsync(self._fd)
        os.fchmod(self._fd, 0o444)
        target = self.store.path(self.expected)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(os.path.join(self.dir, "data"), target)
        self.committed = True

    def commit_file(self, path: str) -> bool:
        """Commit the finished file at ``path`` as this blob by hard-linking
        it (no copy). The caller has verified its digest, and nothing writes
        to it any more; its size is checked here. False when it cannot be
        linked (another filesystem): the caller then writes it instead."""
        if self.committed:
            return True
        linked = os.path.join(self.dir, "linked")
        try:
            os.link(path, linked)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return False
            raise
        try:
            fd = os.open(linked, os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                if self.size is not None and size != self.size:
                    raise DigestMismatch(f"blob {self.expected}: got {size} bytes, "
                                         f"want {self.size}")
                os.fsync(fd)
                os.fchmod(fd, 0o444)
            finally:
                os.close(fd)
            target = self.store.path(self.expected)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(linked, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(linked)
            raise
        self.committed = True
        return True

    def _discard(self) -> None:
        os.ftruncate(self._fd, 0)
        self.offset = 0  # nothing worth resuming: __exit__ removes the ingest

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        if self.committed or (self.offset == 0):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)


class ContentStore:
    """Provider (open/read), ingester (writer/put) and manager (delete/list)."""

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
        os.makedirs(os.path.join(root, "ingest"), exist_ok=True)

    def path(self, digest: str) -> str:
        algo, hexpart = digests.parse(digest)
        return os.path.join(self.root, "blobs", algo, hexpart)

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def writer(self, expected: str, size: int | None = None) -> Writer:
        return Writer(self, expected, size)

    def put(self, data: bytes, expected: str | None = None) -> str:
        """Store small content (manifests, configs); returns its digest."""
        digest = expected or digests.of_bytes(data)
        with self.writer(digest, len(data)) as w:
            if not w.committed:
                w.reset()
                w.write(data)
                w.commit()
        return digest

    def ingest_from(self, src: BinaryIO, expected: str, size: int | None = None) -> str:
        with self.writer(expected, size) as w:
            if not w.committed:
                w.reset()
                while chunk := src.read(1 << 20):
                    w.write(chunk)
                w.commit()
        return expected

    def ingest_file(self, path: str, expected: str, size: int | None = None) -> str:
        """Store the file at ``path``, whose digest the caller has verified and
        which nothing writes to any more: hard-linked when it lies on the
        store's filesystem (``ingest_dir`` is a good place to make it),
        otherwise copied and checked like ``ingest_from``."""
        with self.writer(expected, size) as w:
            if w.committed or w.commit_file(path):
                return expected
            w.reset()
            with open(path, "rb") as src:
                while chunk := src.read(1 << 20):
                    w.write(chunk)
            w.commit()
        return expected

    @property
    def ingest_dir(self) -> str:
        """Where to make files for ``ingest_file`` (the store's filesystem)."""
        return os.path.join(self.root, "ingest")

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def digests(self) -> Iterator[str]:
        base = os.path.join(self.root, "blobs")
        for algo in sorted(os.listdir(base)):
            for hexpart in sorted(os.listdir(os.path.join(base, algo))):
                yield f"{algo}:{hexpart}"

    def stale_ingests(self) -> list[str]:
        """Ingest directories nobody holds the lock of (left by a crash)."""
        found = []
        base = os.path.join(self.root, "ingest")
        for name in os.listdir(base):
            lock = os.path.join(base, name, "lock")
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                found.append(os.path.join(base, name))
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                found.append(os.path.join(base, name))
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
        return found
