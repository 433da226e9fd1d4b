"""ImageAssembler: layers from directories, tar writers and tar streams;
config and manifest; register."""

from __future__ import annotations

import gzip
import io
import os
import socket
import tarfile
import time
from pathlib import Path

import pytest
from imagetest_util import new_store, sha

from isobox.errors import InvalidArgument
from isobox.images.builder import ImageAssembler, register
from isobox.oci import image_spec as spec


def _tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "conf").write_text("x=1\n")
    os.link(root / "etc" / "conf", root / "etc" / "conf.hard")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF...")
    os.chmod(root / "bin" / "tool", 0o4755)
    os.symlink("tool", root / "bin" / "alias")
    (root / "proc" / "1").mkdir(parents=True)
    (root / "proc" / "1" / "status").write_text("junk")
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "sock"))
    return root


def _members(store_blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(store_blob))) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_layer_from_dir_is_sorted_complete_and_reproducible(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    first = ImageAssembler(store).add_layer_from_dir(
        str(_tree(tmp_path / "a")), mtime=1000, owner=(0, 0), skip_contents=["proc"])
    time.sleep(1.1)
    second = ImageAssembler(store).add_layer_from_dir(
        str(_tree(tmp_path / "b")), mtime=1000, owner=(0, 0), skip_contents=["/proc/"])
    assert first == second
    assert first.descriptor.media_type == spec.OCI_LAYER_GZIP
    blob = store.read(first.descriptor.digest)
    assert sha(gzip.decompress(blob)) == first.diff_id
    assert len(gzip.decompress(blob)) == first.size
    members = _members(blob)
    names = list(members)
    assert names == ["bin", "bin/alias", "bin/tool", "etc", "etc/conf", "etc/conf.hard",
                     "fifo", "proc"]
    assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
    assert members["bin/tool"].mode == 0o4755
    assert members["etc/conf.hard"].islnk() and members["etc/conf.hard"].linkname == "etc/conf"
    assert members["fifo"].isfifo()
    assert all(m.mtime == 1000 and m.uid == 0 and m.uname == "" for m in members.values())


def test_layer_from_dir_keeps_owners_by_default(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "f").write_text("1")
    os.chown(root / "f", 1234, 5678)
    store, _ = new_store(tmp_path)
    layer = ImageAssembler(store).add_layer_from_dir(str(root))
    member = _members(store.read(layer.descriptor.digest))["f"]
    assert (member.uid, member.gid) == (1234, 5678)


def test_finish_writes_config_and_manifest(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    asm = ImageAssembler(store)

    def write(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))

    one = asm.add_layer(write)
    two = asm.add_layer_from_tar(io.BytesIO(gzip.compress(_plain_tar())))
    image = asm.finish(
        spec.ImageConfig(architecture="amd64", os="linux", created="2020-01-01T00:00:00Z",
                         rootfs=spec.RootFS(diff_ids=["sha256:" + "f" * 64])),
        [spec.History(created_by="one"), spec.History(created_by="env", empty_layer=True),
         spec.History(created_by="two")])
    config = spec.decode_config(store.read(image.config_digest))
    assert config.rootfs.diff_ids == [one.diff_id, two.diff_id]
    assert config.history and len(config.history) == 3
    manifest = spec.decode_manifest(store.read(image.manifest_digest))
    assert manifest.config.media_type == spec.OCI_CONFIG
    assert manifest.layers == [one.descriptor, two.descriptor]
    assert image.size == one.size + two.size
    assert register(records, image, ["a:1", "b"]) == image.config_digest
    assert records.lookup("b:latest").manifest == image.manifest_digest


def _plain_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("empty"), io.BytesIO())
    return buf.getvalue()


def test_reusing_a_stored_layer(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    base = ImageAssembler(store).add_layer_from_tar(io.BytesIO(_plain_tar()))
    asm = ImageAssembler(store)
    asm.add_layer_blob(base)
    image = asm.finish(spec.ImageConfig(architecture="amd64", os="linux", rootfs=spec.RootFS()))
    assert spec.decode_manifest(store.read(image.manifest_digest)).layers == [base.descriptor]
    store.delete(base.descriptor.digest)
    with pytest.raises(InvalidArgument, match="not in the store"):
        ImageAssembler(store).add_layer_blob(base)


def test_history_must_match_the_layers(tmp_path: Path) -> None:
    store, _ = new_store(tmp_path)
    asm = ImageAssembler(store)
    asm.add_layer_from_tar(io.BytesIO(_plain_tar()))
    with pytest.raises(InvalidArgument, match="history"):
        asm.finish(spec.ImageConfig(architecture="amd64", os="linux", rootfs=spec.RootFS()),
                   [spec.History(created_by="a"), spec.History(created_by="b")])


def test_register_refuses_digest_names(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    image = ImageAssembler(store).finish(
        spec.ImageConfig(architecture="amd64", os="linux", rootfs=spec.RootFS()))
    with pytest.raises(InvalidArgument):
        register(records, image, ["x@sha256:" + "0" * 64])
    assert records.all() == []
