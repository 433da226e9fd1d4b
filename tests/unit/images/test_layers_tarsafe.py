"""tarsafe: path checks, and the directory walker with and without openat2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isobox.images.tarsafe import EntryError, Tree, split_path


@pytest.mark.parametrize("name, parts", [
    ("a/b/c", ("a", "b", "c")), ("./a//b/", ("a", "b")), ("./", ()), ("", ()),
    ("a/./b", ("a", "b")), ("..a/b..", ("..a", "b..")),
])
def test_split_path(name: str, parts: tuple[str, ...]) -> None:
    assert split_path(name, 4096, 255) == parts


@pytest.mark.parametrize("name, problem", [
    ("/abs", "absolute"), ("a/../b", r"'\.\.'"), ("..", r"'\.\.'"), ("a\0b", "NUL"),
    ("x" * 256, "component longer"), ("é" * 128, "component longer"),
    ("a/" * 2048 + "b", "longer than 4096"), ("a/" * 257, "deeper than 256"),
])
def test_split_path_refusals(name: str, problem: str) -> None:
    with pytest.raises(EntryError, match=problem):
        split_path(name, 4096, 255)


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_tree_never_follows_symlinks(tmp_path: Path, openat2: bool) -> None:
    root = tmp_path / "root"
    (root / "real" / "sub").mkdir(parents=True)
    (root / "file").write_bytes(b"")
    os.symlink(str(tmp_path), root / "abs")
    os.symlink("real", root / "rel")
    os.symlink("../..", root / "real" / "up")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    tree = Tree(fd)
    tree._openat2 = openat2
    try:
        sub = tree.dir_fd(("real", "sub"))
        assert os.path.samestat(os.fstat(sub), os.stat(root / "real" / "sub"))
        assert tree.dir_fd(("real", "sub")) == sub  # cached
        made = tree.dir_fd(("new", "deeper"))
        assert os.path.samestat(os.fstat(made), os.stat(root / "new" / "deeper"))
        for parts, problem in [(("abs",), "'abs' is a symlink"),
                               (("rel", "sub"), "'rel' is a symlink"),
                               (("real", "up", "x"), "'real/up' is a symlink"),
                               (("file", "x"), "'file' is not a directory")]:
            with pytest.raises(EntryError, match=problem):
                tree.dir_fd(parts)
        with pytest.raises(FileNotFoundError):
            tree.open_dir(("missing",))
        assert not (root / "missing").exists()
        assert sorted(os.listdir(tmp_path)) == ["root"]
    finally:
        tree.close()
        os.close(fd)
