"""Layers unpacked while they download (``StreamingUnpack`` as the pull's
``on_layers``): the layers appear only once their blobs are stored; a bad
layer, a broken or corrupt download leaves no layer, no staging directory
and no blob behind; a download that starts over falls back to the stored blob."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_fake import BrokenStream, FakeRegistry

from isobox.errors import InvalidArgument, Unavailable
from isobox.images.chain import chain_ids
from isobox.images.content import BlobFeed, ContentStore, DigestMismatch, FeedFailed, FeedRestarted
from isobox.images.snapshots import OverlaySnapshotter
from isobox.images.unpack import StreamingUnpack
from isobox.oci import reference
from isobox.registry import RegistryClient
from registry_server import make_image, make_layer

REF = reference.parse("registry.test/app:1.0")


def blob_get(digest: str) -> Any:
    return lambda r: r.method == "GET" and r.url.path.endswith(f"/blobs/{digest}")


def big_layer(tag: str, files: int = 40) -> bytes:
    """Enough data to arrive in several chunks."""
    return make_layer({f"{tag}/f{i:03d}": os.urandom(8_000) for i in range(files)})


@pytest.fixture
def snapshots(tmp_path: Path) -> OverlaySnapshotter:
    return OverlaySnapshotter(str(tmp_path / "snapshots"))


def pull(client: RegistryClient, store: ContentStore,
         snapshots: OverlaySnapshotter) -> tuple[Any, int]:
    streaming = StreamingUnpack(store, snapshots)
    try:
        result = client.pull(REF, store, on_layers=streaming.start)
    except BaseException:
        streaming.abort()
        raise
    return result, streaming.finish()


def leftovers(tmp_path: Path, store: ContentStore) -> list[str]:
    tmp = os.listdir(tmp_path / "snapshots" / "tmp")
    return tmp + [n for n in os.listdir(os.path.join(store.root, "ingest"))]


def test_layers_unpack_while_they_download(fake: FakeRegistry, client: RegistryClient,
                                           store: ContentStore, snapshots: OverlaySnapshotter,
                                           tmp_path: Path) -> None:
    img = make_image([big_layer("a"), make_layer({"b/x": b"x"}), big_layer("c")])
    fake.add_image("app", "1.0", img)
    result, size = pull(client, store, snapshots)
    chains = chain_ids(result.config.rootfs.diff_ids)
    assert all(snapshots.has_layer(c) for c in chains)
    assert size == 2 * 40 * 8_000 + 1
    top = Path(snapshots._dir(chains[1])) / "fs" / "b" / "x"
    assert top.read_bytes() == b"x"
    assert store.exists(img.manifest_digest)
    assert leftovers(tmp_path, store) == []


def test_a_pull_of_an_image_already_there_reads_nothing_again(
        fake: FakeRegistry, client: RegistryClient, store: ContentStore,
        snapshots: OverlaySnapshotter, tmp_path: Path) -> None:
    img = make_image([big_layer("a"), big_layer("b")])
    fake.add_image("app", "1.0", img)
    pull(client, store, snapshots)
    before = len(fake.seen("GET", "/blobs/"))
    _, size = pull(client, store, snapshots)  # blobs and layers exist: feeds start committed
    assert len(fake.seen("GET", "/blobs/")) == before
    assert size == 2 * 40 * 8_000
    assert leftovers(tmp_path, store) == []


@pytest.mark.parametrize("bad", ["../evil", "/abs/evil"])
def test_a_hostile_second_layer_leaves_nothing(fake: FakeRegistry, client: RegistryClient,
                                               store: ContentStore,
                                               snapshots: OverlaySnapshotter, tmp_path: Path,
                                               bad: str) -> None:
    img = make_image([big_layer("a"), make_layer({"ok": b"1", bad: b"evil"}), big_layer("c")])
    fake.add_image("app", "1.0", img)
    with pytest.raises(InvalidArgument, match="layer entry"):
        pull(client, store, snapshots)
    chains = chain_ids([d for d in img_diff_ids(img)])
    assert not snapshots.has_layer(chains[1]) and not snapshots.has_layer(chains[2])
    assert leftovers(tmp_path, store) == []
    assert not (tmp_path / "snapshots" / "evil").exists()
    assert not (tmp_path / "evil").exists() and not Path("/abs/evil").exists()


def img_diff_ids(img: Any) -> list[str]:
    import json

    return list(json.loads(img.blobs[img.config_digest])["rootfs"]["diff_ids"])


def test_a_download_that_keeps_breaking_leaves_no_layer(
        fake: FakeRegistry, client: RegistryClient, store: ContentStore,
        snapshots: OverlaySnapshotter, tmp_path: Path) -> None:
    img = make_image([big_layer("a"), big_layer("b"), big_layer("c")])
    fake.add_image("app", "1.0", img)
    layer = img.layer_digests[1]
    cut = len(img.blobs[layer]) // 3
    # every try breaks off: resumed tries get nothing more
    fake.fail(100, blob_get(layer),
              lambda r: httpx.Response(200, stream=BrokenStream(
                  b"" if "range" in r.headers else img.blobs[layer][:cut])))
    with pytest.raises(Unavailable):
        pull(client, store, snapshots)
    assert not any(snapshots.has_layer(c) for c in chain_ids(img_diff_ids(img))[1:])
    assert not store.exists(layer) and not store.exists(img.manifest_digest)
    assert os.listdir(tmp_path / "snapshots" / "tmp") == []


def test_a_corrupt_blob_leaves_no_layer(fake: FakeRegistry, client: RegistryClient,
                                        store: ContentStore, snapshots: OverlaySnapshotter,
                                        tmp_path: Path) -> None:
    img = make_image([big_layer("a"), big_layer("b")])
    fake.add_image("app", "1.0", img)
    layer = img.layer_digests[0]
    other = make_layer({"a/x": b"evil"})  # a valid layer, but not the one asked for
    fake.blobs[layer] = other + b"\0" * (len(img.blobs[layer]) - len(other))
    with pytest.raises(DigestMismatch):
        pull(client, store, snapshots)
    assert not any(snapshots.has_layer(c) for c in chain_ids(img_diff_ids(img)))
    assert not store.exists(layer)
    assert leftovers(tmp_path, store) == []


def test_a_download_that_starts_over_unpacks_from_the_stored_blob(
        fake: FakeRegistry, client: RegistryClient, store: ContentStore,
        snapshots: OverlaySnapshotter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isobox.images import unpack

    redone: list[str] = []
    real = unpack._stage_from_store
    monkeypatch.setattr(unpack, "_stage_from_store",
                        lambda st, sn, job: redone.append(job.digest) or real(st, sn, job))
    img = make_image([big_layer("a"), big_layer("b")])
    fake.add_image("app", "1.0", img)
    fake.honour_range = False  # the resumed GET gets the whole blob: the writer resets
    layer = img.layer_digests[1]
    half = len(img.blobs[layer]) // 2
    fake.fail(1, blob_get(layer),
              lambda r: httpx.Response(200, stream=BrokenStream(img.blobs[layer][:half])))
    result, size = pull(client, store, snapshots)
    assert redone == [layer]  # the other layer was unpacked from its feed
    assert all(snapshots.has_layer(c) for c in chain_ids(result.config.rootfs.diff_ids))
    assert size == 2 * 40 * 8_000
    assert leftovers(tmp_path, store) == []


# -- BlobFeed -------------------------------------------------------------------------


def test_feed_readers_wait_for_bytes_and_see_the_end_only_after_the_commit(
        store: ContentStore) -> None:
    data = os.urandom(3 << 20)
    digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    feed = BlobFeed(digest)
    got: list[bytes] = []

    def read() -> None:
        with feed.reader() as reader:
            while chunk := reader.read(1 << 16):
                got.append(chunk)

    thread = threading.Thread(target=read)
    thread.start()
    with store.writer(digest, len(data), feed=feed) as writer:
        for i in range(0, len(data), 100_000):
            writer.write(data[i:i + 100_000])
        thread.join(0.2)
        assert thread.is_alive()  # all bytes there, but not yet committed
        writer.commit()
    thread.join(10)
    assert b"".join(got) == data


def test_feed_failures_reach_the_reader(store: ContentStore) -> None:
    feed = BlobFeed("sha256:" + "0" * 64)
    with pytest.raises(InvalidArgument), store.writer(feed.digest, 10, feed=feed) as writer:
        writer.write(b"0123456789")
        reader = feed.reader()
        assert reader.read(4) == b"0123"
        writer.commit()  # wrong digest: DigestMismatch
    with pytest.raises(FeedRestarted):
        reader.read()
    reader.close()
    late = feed.reader()  # a reader after the writer gave up
    with pytest.raises(FeedFailed):
        late.read()


def test_a_feed_no_writer_serves_ends_when_failed() -> None:
    feed = BlobFeed("sha256:" + "1" * 64)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            feed.reader().read()
        except FeedFailed as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    feed.failed("the pull failed")
    thread.join(10)
    assert errors and "the pull failed" in str(errors[0])
