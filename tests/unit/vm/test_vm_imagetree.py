"""Host files into the guest tree, at their host paths, symlinks kept."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from vmtest_util import read_cpio

from isobox.vm.cpio import CpioWriter
from isobox.vm.imagetree import ImageTree


def entries(out: io.BytesIO) -> dict[str, tuple[int, bytes]]:
    return {e.name: (e.mode, e.data) for e in read_cpio(out.getvalue())}


def test_host_file_recreates_the_symlinks_on_its_path(tmp_path: Path) -> None:
    # tmp/usr/lib/libx.so.1.2 reached as tmp/lib/libx.so.1 (lib -> usr/lib, a merged /usr)
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "libx.so.1.2").write_bytes(b"ELF")
    (tmp_path / "usr" / "lib" / "libx.so.1").symlink_to("libx.so.1.2")
    (tmp_path / "lib").symlink_to("usr/lib")
    out = io.BytesIO()
    writer = CpioWriter(out)
    tree = ImageTree(writer)
    tree.host_file(str(tmp_path / "lib" / "libx.so.1"))
    tree.host_file(str(tmp_path / "usr" / "lib" / "libx.so.1.2"))  # already there: skipped
    tree.symlink(str(tmp_path / "lib" / "sh"), "busybox")  # through the guest's own link
    writer.finish()
    found = entries(out)
    base = str(tmp_path).lstrip("/")
    assert found[f"{base}/lib"] == (stat.S_IFLNK | 0o777, b"usr/lib")
    assert found[f"{base}/usr/lib/libx.so.1"][1] == b"libx.so.1.2"
    assert found[f"{base}/usr/lib/libx.so.1.2"][1] == b"ELF"
    assert f"{base}/usr/lib/sh" in found
    names = list(found)
    for name in names:  # parents before children
        parent = name.rsplit("/", 1)[0]
        if "/" in name:
            assert names.index(parent) < names.index(name)


def test_explicit_guest_path_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    tree = ImageTree(CpioWriter(io.BytesIO()))
    tree.host_file(str(tmp_path / "a.py"), "/usr/lib/python3.11/isobox/a.py")
    assert tree.exists("/usr/lib/python3.11/isobox/a.py")
    assert tree.exists("/usr/lib/python3.11")
    with pytest.raises(ValueError, match="added twice"):
        tree.file("/usr/lib/python3.11/isobox/a.py", b"")


def test_symlink_loops_are_refused() -> None:
    tree = ImageTree(CpioWriter(io.BytesIO()))
    tree.symlink("/a", "b")
    tree.symlink("/b", "a")
    with pytest.raises(ValueError, match="too many symlinks"):
        tree.resolve("/a/x")
