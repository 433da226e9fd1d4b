"""bootstrap_busybox (reproducible, from the host's static busybox), the ELF
check, and the apt mirror lookup behind bootstrap_debian."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import tarfile
from pathlib import Path

import pytest
from imagetest_util import new_store

from isobox.errors import InvalidArgument, NotFound
from isobox.images.bootstrap import (
    DEFAULT_PATH,
    bootstrap_busybox,
    default_mirror,
    elf_architecture,
)
from isobox.oci import image_spec as spec

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox-static")


def _layer_members(store_root: Path, image_id: str) -> tuple[list[tarfile.TarInfo], bytes]:
    from isobox.images.content import ContentStore
    store = ContentStore(str(store_root))
    config = spec.decode_config(store.read(image_id))
    assert len(config.rootfs.diff_ids) == 1
    blobs = [d for d in store.digests() if d != image_id]
    for digest in blobs:
        data = store.read(digest)
        if data[:2] == b"\x1f\x8b":
            plain = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
                return tf.getmembers(), plain
    raise AssertionError("no layer blob")


@needs_busybox
def test_busybox_image_is_reproducible_and_decodes(tmp_path: Path) -> None:
    store, records = new_store(tmp_path, "one")
    image_id = bootstrap_busybox(store, records, busybox=BUSYBOX or "")
    store2, records2 = new_store(tmp_path, "two")
    assert bootstrap_busybox(store2, records2, busybox=BUSYBOX or "", ref="bb:1") == image_id
    record = records.lookup("busybox:latest")
    assert record.id == image_id
    assert records2.get(image_id).manifest == record.manifest
    manifest = spec.decode_manifest(store.read(record.manifest))
    assert manifest.media_type == spec.OCI_MANIFEST
    assert [d.media_type for d in manifest.layers] == [spec.OCI_LAYER_GZIP]
    config = spec.decode_config(store.read(image_id))
    assert config.config == spec.ContainerConfig(env=[DEFAULT_PATH], cmd=["sh"])
    assert (config.os, config.architecture) == ("linux", "amd64")
    assert config.created == "1970-01-01T00:00:00Z"


@needs_busybox
def test_busybox_layer_content(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    image_id = bootstrap_busybox(store, records, busybox=BUSYBOX or "", ref=None)
    assert records.names_of(image_id) == []
    members, plain = _layer_members(tmp_path / "store", image_id)
    by_name = {m.name: m for m in members}
    assert [m.name for m in members] == sorted(by_name)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
    with open(BUSYBOX or "", "rb") as f:
        host = f.read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        assert tf.extractfile("bin/busybox").read() == host  # type: ignore[union-attr]
    assert by_name["bin/busybox"].mode == 0o755
    for applet in ("sh", "ls", "cat", "echo"):
        assert by_name[f"bin/{applet}"].issym()
        assert by_name[f"bin/{applet}"].linkname == "/bin/busybox"
    assert by_name["tmp"].mode == 0o1777 and by_name["root"].mode == 0o700
    assert "etc/hosts" not in by_name
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        passwd = tf.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
        group = tf.extractfile("etc/group").read().decode()  # type: ignore[union-attr]
    assert passwd.startswith("root:x:0:0:") and "\nnobody:x:65534:65534:" in passwd
    assert group.startswith("root:x:0:")


def test_missing_busybox_is_not_found(tmp_path: Path) -> None:
    store, records = new_store(tmp_path)
    with pytest.raises(NotFound, match="busybox-static"):
        bootstrap_busybox(store, records, busybox=str(tmp_path / "nope"))


def _elf64(interp: bytes | None, machine: int = 0x3E) -> bytes:
    """A minimal little-endian ELF64 header with one program header."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HHI", header, 16, 2, machine, 1)
    struct.pack_into("<Q", header, 32, 64)          # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)      # e_phentsize, e_phnum
    ph = bytearray(56)
    body = b""
    if interp is not None:
        struct.pack_into("<I", ph, 0, 3)            # PT_INTERP
        struct.pack_into("<Q", ph, 8, 120)          # p_offset
        body = interp + b"\0"
    else:
        struct.pack_into("<I", ph, 0, 1)            # PT_LOAD
    return bytes(header + ph) + body


def test_elf_check() -> None:
    assert elf_architecture(_elf64(None)) == "amd64"
    assert elf_architecture(_elf64(None, 0xB7)) == "arm64"
    with pytest.raises(InvalidArgument, match=r"dynamically linked.*ld-linux-x86-64"):
        elf_architecture(_elf64(b"/lib64/ld-linux-x86-64.so.2"), "bb")
    with pytest.raises(InvalidArgument, match="not an ELF"):
        elf_architecture(b"#!/bin/sh\necho I am not busybox\n" * 4)
    with pytest.raises(InvalidArgument, match="malformed"):
        elf_architecture(_elf64(None)[:80])
    with pytest.raises(InvalidArgument, match="unknown ELF machine"):
        elf_architecture(_elf64(None, 0x1234))


def test_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    dynamic = "/bin/ls"
    with open(dynamic, "rb") as f:
        if b"ld-linux" not in f.read(4096):
            pytest.skip("/bin/ls is not dynamically linked here")
    store, records = new_store(tmp_path)
    with pytest.raises(InvalidArgument, match="dynamically linked"):
        bootstrap_busybox(store, records, busybox=dynamic)
    assert records.all() == []


def test_default_mirror_from_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [signed-by=/k.gpg arch=amd64] http://security.debian.org/debian-security "
        "bookworm-security main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [ trusted=yes ] http://mirror.example/debian/ bookworm main\n")
    assert default_mirror(str(tmp_path)) == "http://mirror.example/debian"
    os.unlink(tmp_path / "sources.list")
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n")
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text(
        "deb http://wrong.example/debian bookworm main\n")
    assert default_mirror(str(tmp_path)) == "http://deb.example/debian"
    assert default_mirror(str(tmp_path / "empty")) == "http://deb.debian.org/debian"
