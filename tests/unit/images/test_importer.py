"""import_rootfs: a rootfs tarball (any compression) becomes a one-layer image."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from imagetest_util import TarBuilder, assert_untouched, new_store, sha

from isobox.errors import InvalidArgument
from isobox.images.importer import import_rootfs
from isobox.oci import image_spec as spec

ROOTFS = (TarBuilder().dir("bin").file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
          .link("bin/sh", "hello").dir("tmp").bytes())
CREATED = "2024-05-06T07:08:09Z"

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda d: d,
    "gzip": lambda d: gzip.compress(d),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_import_any_compression_gives_the_same_image(kind: str, tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    image_id = import_rootfs(store, records, io.BytesIO(COMPRESSORS[kind](ROOTFS)),
                             ref="example/imported:v1", created=CREATED)
    plain_store, plain_records = new_store(tmp_path, "plain")
    assert image_id == import_rootfs(plain_store, plain_records, io.BytesIO(ROOTFS),
                                     ref=None, created=CREATED)
    record = records.lookup("example/imported:v1")
    assert record.id == image_id and record.size == len(ROOTFS)
    manifest = spec.decode_manifest(store.read(record.manifest))
    (layer,) = manifest.layers
    assert layer.media_type == spec.OCI_LAYER_GZIP
    blob = store.read(layer.digest)
    assert gzip.decompress(blob) == ROOTFS
    config = spec.decode_config(store.read(image_id))
    assert config.rootfs.diff_ids == [sha(ROOTFS)]
    assert (config.os, config.architecture, config.created) == ("linux", "amd64", CREATED)
    assert config.history == [spec.History(created=CREATED, comment="Imported from -")]


def test_import_applies_changes_message_and_platform(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    image_id = import_rootfs(
        store, records, io.BytesIO(ROOTFS), ref=None, message="my rootfs",
        changes=["CMD echo hi", 'ENTRYPOINT ["/bin/hello"]', "ENV A=1 B=2", "ENV C 3",
                 "WORKDIR /tmp", "USER nobody", "EXPOSE 80/udp", "LABEL k=v",
                 "VOLUME /data", "STOPSIGNAL SIGINT"],
        platform=("linux", "arm64"))
    config = spec.decode_config(store.read(image_id))
    c = config.config
    assert c is not None
    assert c.cmd == ["/bin/sh", "-c", "echo hi"] and c.entrypoint == ["/bin/hello"]
    assert c.env == ["A=1", "B=2", "C=3"] and c.working_dir == "/tmp" and c.user == "nobody"
    assert c.exposed_ports == {"80/udp": {}} and c.labels == {"k": "v"}
    assert c.volumes == {"/data": {}} and c.stop_signal == "SIGINT"
    assert config.architecture == "arm64"
    assert config.history and config.history[0].comment == "my rootfs"
    assert config.created and config.created.endswith("Z")
    assert records.names_of(image_id) == []


def test_import_from_a_named_source(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    image_id = import_rootfs(store, records, io.BytesIO(ROOTFS), ref=None,
                             source="rootfs.tar.gz")
    config = spec.decode_config(store.read(image_id))
    assert config.history and config.history[0].comment == "Imported from rootfs.tar.gz"


@pytest.mark.parametrize("data", [b"", b"not a tarball at all" * 100,
                                  gzip.compress(b"gzip but no tar" * 100), ROOTFS[:700],
                                  b"\x1f\x8b\x08\x00garbage"])
def test_import_refuses_what_is_not_a_tar(data: bytes, tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    with pytest.raises(InvalidArgument):
        import_rootfs(store, records, io.BytesIO(data), ref="x:1")
    assert_untouched(store, records)


@pytest.mark.parametrize(("ref", "changes"), [("Bad:Name", []), (None, ["RUN rm -rf /"]),
                                              ("x@sha256:" + "0" * 64, [])])
def test_bad_ref_or_change_is_refused_before_reading(ref: str | None, changes: list[str],
                                                     tmp_path: Path) -> None:
    store, records = new_store(tmp_path)

    class Unreadable(io.RawIOBase):
        def read(self, n: int = -1) -> bytes:
            raise AssertionError("read before validating the arguments")

    with pytest.raises(InvalidArgument):
        import_rootfs(store, records, Unreadable(), ref=ref, changes=changes)  # type: ignore[arg-type]
    assert_untouched(store, records)


def test_imported_layer_keeps_modes_and_links(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    image_id = import_rootfs(store, records, io.BytesIO(gzip.compress(ROOTFS)), ref=None)
    manifest = spec.decode_manifest(store.read(records.get(image_id).manifest))
    with tarfile.open(fileobj=io.BytesIO(store.read(manifest.layers[0].digest))) as tf:
        hello, sh = tf.getmember("bin/hello"), tf.getmember("bin/sh")
    assert hello.mode == 0o755 and sh.issym() and sh.linkname == "hello"
