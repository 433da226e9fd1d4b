"""Block images: the writable ext4 image, layer keys, garbage collection.
(Layer images with every file type are checked in tests/system/test_vm_boot.py,
which needs root to make device nodes and trusted.* xattrs.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from isobox.errors import InvalidArgument, NotFound
from isobox.vm import disks


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="e2fsprogs not installed")
def test_writable_image_is_sparse_ext4_with_a_root_owned_root(tmp_path: Path) -> None:
    path = tmp_path / "upper.ext4"
    disks.create_writable(str(path), 4 << 30)
    st = path.stat()
    assert st.st_size == 4 << 30
    assert st.st_blocks * 512 < 64 << 20, "the image must stay sparse"
    if shutil.which("debugfs"):
        out = subprocess.run(["debugfs", "-R", "stat /", str(path)], capture_output=True,
                             text=True, timeout=30).stdout
        assert "Mode:  0755" in out and "User:     0   Group:     0" in out
    with pytest.raises(FileExistsError):
        disks.create_writable(str(path), 4 << 30)


def test_writable_image_too_small(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        disks.create_writable(str(tmp_path / "x"), 1 << 20)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["", "../x", "a/b", ".hidden", "a b"])
def test_layer_key_is_checked(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidArgument):
        disks.layer_image(str(tmp_path), str(tmp_path), key)


def test_missing_layer_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        disks.layer_image(str(tmp_path), str(tmp_path / "nope"), "sha256:00")


def test_cached_layer_image_is_not_rebuilt(tmp_path: Path) -> None:
    images = Path(disks.layer_images_dir(str(tmp_path)))
    images.mkdir(parents=True)
    (images / "sha256-ab.erofs").write_bytes(b"cached")
    assert disks.layer_image(str(tmp_path), "/nonexistent", "sha256:ab") == \
        str(images / "sha256-ab.erofs")


def test_remove_layer_images(tmp_path: Path) -> None:
    images = Path(disks.layer_images_dir(str(tmp_path)))
    images.mkdir(parents=True)
    for name in ("sha256-keep.erofs", "sha256-drop.erofs", ".build-old.erofs",
                 ".build-new.erofs", "unrelated.txt"):
        (images / name).write_bytes(b"")
    old = time.time() - 7200
    os.utime(images / ".build-old.erofs", (old, old))
    removed = disks.remove_layer_images(str(tmp_path), ["sha256:keep"])
    assert sorted(os.path.basename(p) for p in removed) == [".build-old.erofs",
                                                            "sha256-drop.erofs"]
    assert sorted(p.name for p in images.iterdir()) == [".build-new.erofs", "sha256-keep.erofs",
                                                        "unrelated.txt"]
    assert disks.remove_layer_images(str(tmp_path / "none"), []) == []
