"""Unpack the layers of one image into the snapshotter, several at a time:
from the content store (``unpack_image``), or while they download
(``StreamingUnpack``).

Either way each layer is staged in its own thread (``stage_layer``: creating
files is kernel time, inflating releases the GIL), and the staged layers are
committed bottom up, each as soon as it and every layer below it are
staged. Committing in that order, while holding only the locks of staged
layers above the committed ones, is what keeps two processes unpacking the
same chains from waiting on each other for ever. On any failure every staged
layer is discarded and the first error raised; layers committed before it
stay (they are complete).

Streaming: the pull calls ``StreamingUnpack.start`` once the config is
stored, and serves each layer's bytes through the ``BlobFeed`` it returns
while the blob downloads. A layer staged from a feed is committed only when
the pull has finished, so after its blob was verified and stored; a feed
that started over (a resumed download that did not verify) is void, and
that layer is staged again from the stored blob.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from isobox.errors import InvalidArgument
from isobox.images.chain import chain_ids
from isobox.images.content import BlobFeed, ContentStore, FeedFailed, FeedRestarted
from isobox.images.snapshots import OverlaySnapshotter, StagedLayer
from isobox.oci import image_spec as spec

__all__ = ["LayerJob", "StreamingUnpack", "layer_jobs", "unpack_image"]

#: Layers of one image staged at the same time.
THREADS = 4


@dataclass(frozen=True)
class LayerJob:
    digest: str             #: the blob's
    diff_id: str
    chain: str
    parent: str | None


def layer_jobs(manifest: spec.Manifest, config: spec.ImageConfig) -> list[LayerJob]:
    diff_ids = config.rootfs.diff_ids
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument(f"image has {len(manifest.layers)} layers but its config "
                              f"lists {len(diff_ids)} diff ids")
    chains = chain_ids(diff_ids)
    parents: list[str | None] = [None, *chains[:-1]]
    return [LayerJob(layer.digest, diff_id, chain, parent) for layer, diff_id, chain, parent
            in zip(manifest.layers, diff_ids, chains, parents, strict=True)]


def _stage_from_store(store: ContentStore, snapshots: OverlaySnapshotter,
                      job: LayerJob) -> StagedLayer:
    with store.open(job.digest) as blob:
        return snapshots.stage_layer(job.chain, job.parent, blob, job.diff_id)


def unpack_image(store: ContentStore, snapshots: OverlaySnapshotter,
                 manifest: spec.Manifest, config: spec.ImageConfig) -> int:
    """Unpack every layer not yet unpacked from the store; returns the image's size."""
    jobs = layer_jobs(manifest, config)
    if len(jobs) <= 1:
        size = 0
        for job in jobs:
            with store.open(job.digest) as blob:
                size += snapshots.unpack_layer(job.chain, job.parent, blob, job.diff_id)
        return size
    with _Stager(len(jobs)) as stager:
        for job in jobs:
            stager.submit(functools.partial(_stage_from_store, store, snapshots, job))
        return stager.commit_in_order()


class _Stager:
    """Stage functions run in a pool; ``commit_in_order`` commits their
    results bottom up, each once it is staged. Leaving it discards whatever
    was staged and not committed."""

    def __init__(self, count: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(count, THREADS)),
                                        thread_name_prefix="isobox-unpack")
        self.futures: list[Future[StagedLayer]] = []

    def submit(self, stage: Callable[[], StagedLayer]) -> None:
        self.futures.append(self._pool.submit(stage))

    def commit_in_order(self, redo: Callable[[int, BaseException], StagedLayer | None]
                        = lambda i, exc: None) -> int:
        """Commit every result in order; ``redo(i, error)`` may stage layer
        ``i`` again after its stage function failed (None: raise the error)."""
        size = 0
        for i, future in enumerate(self.futures):
            try:
                staged = future.result()
            except Exception as exc:
                again = redo(i, exc)
                if again is None:
                    raise
                staged = again
            with staged:
                size += staged.commit()
        return size

    def __enter__(self) -> _Stager:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for future in self.futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().discard()


class StreamingUnpack:
    """Stage the layers of one image while a pull downloads them.

    ``start`` is the pull's ``on_layers``; after the pull, call ``finish``
    (it returned) or ``abort`` (it raised). Either ends every thread."""

    def __init__(self, store: ContentStore, snapshots: OverlaySnapshotter) -> None:
        self.store = store
        self.snapshots = snapshots
        self.jobs: list[LayerJob] = []
        self.feeds: dict[str, BlobFeed] = {}
        self._stager: _Stager | None = None

    def start(self, manifest: spec.Manifest, config: spec.ImageConfig) -> dict[str, BlobFeed]:
        self.jobs = layer_jobs(manifest, config)
        self.feeds = {job.digest: BlobFeed(job.digest) for job in self.jobs}
        self._stager = _Stager(len(self.jobs))
        for job in self.jobs:
            self._stager.submit(functools.partial(self._stage_from_feed, job))
        return self.feeds

    def _stage_from_feed(self, job: LayerJob) -> StagedLayer:
        with self.feeds[job.digest].reader() as reader:
            return self.snapshots.stage_layer(job.chain, job.parent, _as_binary(reader),
                                              job.diff_id)

    def finish(self) -> int:
        """Once the pull stored every blob: commit the staged layers bottom up
        (staging again from the store those whose feed was void); returns
        the image's size. On failure every staged layer is discarded."""
        if self._stager is None:
            return 0  # the pull never got to the layers (no on_layers call)
        for digest, feed in self.feeds.items():
            if not feed.is_committed:  # cannot happen after a pull that returned
                feed.failed(f"the pull returned without storing blob {digest}")

        def redo(i: int, exc: BaseException) -> StagedLayer | None:
            if not isinstance(exc, (FeedRestarted, FeedFailed)):
                return None  # the layer itself is bad: that is the error
            return _stage_from_store(self.store, self.snapshots, self.jobs[i])

        with self._stager as stager:
            return stager.commit_in_order(redo)

    def abort(self) -> None:
        """The pull failed: end the feeds, wait for the stagers, discard."""
        for feed in self.feeds.values():
            feed.failed("the pull failed")
        if self._stager is not None:
            with contextlib.suppress(Exception), self._stager:
                pass


def _as_binary(reader: object) -> BinaryIO:
    """The snapshotter reads a layer with ``read(n)`` only."""
    return reader  # type: ignore[return-value]
