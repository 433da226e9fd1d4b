"""The content store: blobs by digest, invisible until verified.

Layout under ``root``:
    blobs/<algo>/<hex>     committed blobs, read-only, content == digest
    ingest/<algo>-<hex>/   one in-progress write per digest: ``data`` (kept
                           across failures so a download can resume) and a
                           ``lock`` held with flock by the one writer

A writer streams into ingest, then ``commit`` checks size and digest, fsyncs
and renames into blobs: readers see the whole blob or none. Two processes
writing the same digest serialise on the lock; the second finds it committed.

A ``BlobFeed`` lets a thread read a blob while a writer is still writing it
(to unpack a layer during its download). Its readers wait for the bytes as
they land in the ingest file, and see the end of the blob only once the
writer has committed it: a blob that fails to verify, or a write that breaks
off or starts over, is an error to them, never a shorter or different blob.
What they read is not in the store until then, so whatever they make of it
must stay invisible until the blob is committed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
from collections.abc import Iterator
from typing import BinaryIO

from isobox.errors import InvalidArgument, NotFound
from isobox.oci import digest as digests


class DigestMismatch(InvalidArgument):
    pass


class FeedRestarted(Exception):
    """The blob's write started over (its partial data was dropped): what a
    reader of its feed read so far is void. Read the committed blob instead."""


class FeedFailed(Exception):
    """The blob was not committed (the download failed or was abandoned)."""


_FEED_CHUNK = 1 << 20


class BlobFeed:
    """One blob as a ``Writer`` writes it, for readers in other threads (see
    the module's docstring). The writer side (``opened``, ``wrote``,
    ``restarted``, ``committed``, ``failed``) is called by the Writer or by
    whoever skips the write; ``failed`` is also how an owner ends a feed no
    writer will ever serve. Each state change wakes the readers."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self._cond = threading.Condition()
        self._path: str | None = None
        self._available = 0
        self._generation = 0
        self._done = False
        self._error: str | None = None

    # -- writer side ------------------------------------------------------------

    def opened(self, path: str, available: int) -> None:
        """The ingest file at ``path`` exists and holds ``available`` bytes."""
        with self._cond:
            self._path, self._available = path, available
            self._cond.notify_all()

    def wrote(self, available: int) -> None:
        with self._cond:
            self._available = available
            self._cond.notify_all()

    def restarted(self) -> None:
        with self._cond:
            self._generation += 1
            self._available = 0
            self._cond.notify_all()

    def committed(self, path: str, size: int) -> None:
        """The blob is verified and stored at ``path`` (``size`` bytes)."""
        with self._cond:
            if self._done or self._error is not None:
                return
            self._path, self._available, self._done = path, size, True
            self._cond.notify_all()

    def failed(self, reason: str) -> None:
        """No committed blob will come (a no-op once committed)."""
        with self._cond:
            if not self._done and self._error is None:
                self._error = reason
                self._cond.notify_all()

    @property
    def is_committed(self) -> bool:
        with self._cond:
            return self._done

    # -- reader side --------------------------------------------------------------

    def reader(self) -> FeedReader:
        with self._cond:
            return FeedReader(self, self._generation)

    def _wait(self, pos: int, generation: int) -> tuple[str, int] | None:
        """(path, available) once bytes past ``pos`` are there; None at the
        end of a committed blob."""
        with self._cond:
            while True:
                if generation != self._generation:
                    raise FeedRestarted(f"blob {self.digest} was written again")
                if self._error is not None:
                    raise FeedFailed(f"blob {self.digest}: {self._error}")
                if pos < self._available and self._path is not None:
                    return self._path, self._available
                if self._done:
                    return None
                self._cond.wait()


class FeedReader:
    """A file-like view (``read``) of a ``BlobFeed``; close it when done."""

    def __init__(self, feed: BlobFeed, generation: int) -> None:
        self._feed = feed
        self._generation = generation
        self._fd = -1
        self._pos = 0

    def read(self, n: int = -1, /) -> bytes:
        found = self._feed._wait(self._pos, self._generation)
        if found is None:
            return b""
        path, available = found
        if self._fd < 0:
            # An fd opened on the ingest file stays valid through the
            # commit's rename (same inode); a path renamed under us is
            # asked for again: by then it is the committed blob's.
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                found = self._feed._wait(self._pos, self._generation)
                if found is None or found[0] == path:
                    raise FeedRestarted(f"blob {self._feed.digest} vanished") from None
                path, available = found
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        want = available - self._pos
        if 0 < n < want:
            want = n
        data = os.pread(self._fd, min(want, _FEED_CHUNK), self._pos)
        if not data:
            raise FeedRestarted(f"blob {self._feed.digest} got shorter while being read")
        self._pos += len(data)
        return data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FeedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Writer:
    """Streams one blob into the ingest area. Use as a context manager."""

    def __init__(self, store: ContentStore, expected: str, size: int | None,
                 feed: BlobFeed | None = None) -> None:
        self.store = store
        self.feed = feed
        self._fed = False  # the feed was told of the ingest file
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
            if self.feed is not None:
                self.feed.committed(self.store.path(self.expected),
                                    self.store.size(self.expected))
            return self
        data = os.path.join(self.dir, "data")
        self._fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Resume: re-hash what an earlier attempt left, continue from its end.
        while chunk := os.read(self._fd, 1 << 20):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if self.size is not None and self.offset > self.size:
            self.reset()
        if self.feed is not None:
            self.feed.opened(data, self.offset)
            self._fed = True
        return self

    def reset(self) -> None:
        """Drop partial data (the source cannot resume, or it was wrong)."""
        if self.feed is not None and self._fed:
            self.feed.restarted()
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
        if self.feed is not None:
            self.feed.wrote(self.offset)

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
        if self.feed is not None:
            self.feed.committed(target, self.offset)

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
        if self.feed is not None and self._fed:
            self.feed.restarted()
        os.ftruncate(self._fd, 0)
        self.offset = 0  # nothing worth resuming: __exit__ removes the ingest

    def __exit__(self, *exc: object) -> None:
        if self.feed is not None and not self.committed:
            self.feed.failed(f"not stored ({exc[1] or 'abandoned'})")
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

    def writer(self, expected: str, size: int | None = None, *,
               feed: BlobFeed | None = None) -> Writer:
        """A writer for blob ``expected``; ``feed`` (optional) lets other
        threads read the blob while it is written."""
        return Writer(self, expected, size, feed)

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
