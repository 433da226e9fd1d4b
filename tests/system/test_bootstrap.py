"""Bootstrapped base images work as root filesystems: busybox from the host's
static binary (fast), Debian through debootstrap (slow: ISOBOX_SLOW_TESTS=1)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from isobox.images.bootstrap import bootstrap_busybox, bootstrap_debian
from isobox.images.content import ContentStore
from isobox.images.layers import apply_layer
from isobox.images.records import ImageRecords
from isobox.oci import image_spec as spec


def _stores(base: Path) -> tuple[ContentStore, ImageRecords]:
    return ContentStore(str(base / "store")), ImageRecords(str(base / "images.db"))


def _unpack(store: ContentStore, records: ImageRecords, name: str, target: Path) -> spec.ImageConfig:
    record = records.lookup(name)
    manifest = spec.decode_manifest(store.read(record.manifest))
    target.mkdir()
    for layer in manifest.layers:
        with store.open(layer.digest) as raw:
            apply_layer(raw, str(target), mode="flat")
    return spec.decode_config(store.read(record.id))


def _chroot(root: Path, *argv: str) -> str:
    result = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static")
def test_busybox_image_runs(tmp_path: Path) -> None:
    store, records = _stores(tmp_path)
    bootstrap_busybox(store, records, ref="bb:test")
    config = _unpack(store, records, "bb:test", tmp_path / "rootfs")
    assert config.config is not None and config.config.cmd == ["sh"]
    out = _chroot(tmp_path / "rootfs", "/bin/sh", "-c",
                  "echo ok; id -un; ls -ld /tmp | cut -c1-10; wget --help 2>&1 | head -1")
    lines = out.splitlines()
    assert lines[:3] == ["ok", "root", "drwxrwxrwt"]
    assert lines[3].startswith("BusyBox v")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_debian_bootstrap(tmp_path: Path) -> None:
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap not installed")
    store, records = _stores(tmp_path)
    image_id = bootstrap_debian(store, records, suite="bookworm", tmpdir=str(tmp_path))
    assert records.lookup("debian:bookworm").id == image_id
    config = _unpack(store, records, "debian:bookworm", tmp_path / "rootfs")
    assert config.config is not None and config.config.cmd == ["bash"]
    assert config.history and "debootstrap" in (config.history[0].created_by or "")
    root = tmp_path / "rootfs"
    assert not (root / "etc" / "resolv.conf").exists()
    assert list((root / "proc").iterdir()) == [] and list((root / "dev").iterdir()) == []
    assert _chroot(root, "/bin/bash", "-c", "cat /etc/debian_version").strip()[:2] == "12"
    assert "ii  bash" in _chroot(root, "dpkg", "-l", "bash")
