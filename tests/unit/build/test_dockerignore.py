""".dockerignore with Docker's pattern rules, and the filtered context copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isobox.build import context
from isobox.build.dockerignore import PatternMatcher, parse_dockerignore
from isobox.errors import InvalidArgument


def matcher(text: str) -> PatternMatcher:
    return PatternMatcher(parse_dockerignore(text))


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    ("*.log", "a.log", True),
    ("*.log", "dir/a.log", False),            # "*" never crosses "/"
    ("**/*.log", "dir/sub/a.log", True),
    ("**/*.log", "a.log", True),              # "**/" is zero or more directories
    ("dir", "dir/deep/file", True),           # a matched directory takes its contents
    ("/dir", "dir/file", True),               # a leading "/" is dropped
    ("dir/../other", "other", True),          # patterns are cleaned
    ("*\n!keep.log", "keep.log", False),      # "!" re-includes
    ("*\n!keep.log", "other", True),
    ("!keep.log\n*", "keep.log", True),       # the last matching line wins
    ("docs\n!docs/README.md", "docs/README.md", False),
    ("docs\n!docs/README.md", "docs/other.md", True),
    ("# comment\n\n  a.txt  ", "a.txt", True),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),
    ("[a-c].txt", "b.txt", True),
    ("[^a-c].txt", "b.txt", False),
    ("**", "anything/at/all", True),
    ("dir/**/x", "dir/x", True),
    ("dir/**/x", "dir/a/b/x", True),
])
def test_patterns(patterns: str, path: str, excluded: bool) -> None:
    assert matcher(patterns).excluded(path) is excluded


def test_lone_bang_is_an_error() -> None:
    with pytest.raises(InvalidArgument):
        parse_dockerignore("!\n")


def test_copy_filtered(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    (src / "docs").mkdir(parents=True)
    (src / "node_modules" / "x").mkdir(parents=True)
    dest.mkdir()
    for name in ("a.txt", "b.log", "docs/README.md", "docs/other.md", "node_modules/x/y"):
        (src / name).write_text(name)
    os.symlink("a.txt", src / "link")
    (src / ".dockerignore").write_text("*.log\nnode_modules\ndocs\n!docs/README.md\n")
    context.copy_filtered(str(src), str(dest), context.matcher_for(str(src)))
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert found == [".dockerignore", "a.txt", "docs", "docs/README.md", "link"]
    assert os.readlink(dest / "link") == "a.txt"


def test_resolve_sources_globs_and_escape(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("a1.txt", "a2.txt", "b.txt", "d/a3.txt"):
        (tmp_path / name).write_text(name)
    root = str(tmp_path)
    assert context.resolve_sources(root, "a*.txt") == ["a1.txt", "a2.txt"]
    assert context.resolve_sources(root, "*/a?.txt") == ["d/a3.txt"]
    assert context.resolve_sources(root, ".") == [""]
    assert context.resolve_sources(root, "/b.txt") == ["b.txt"]
    with pytest.raises(InvalidArgument, match="outside the build context"):
        context.resolve_sources(root, "../etc/passwd")
    os.symlink("/etc", tmp_path / "out")
    with pytest.raises(InvalidArgument, match="outside the build context"):
        context.resolve_sources(root, "out")


def test_checksum_follows_content_and_mode_not_time(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("one")
    first = context.checksum(str(tmp_path))
    os.utime(f, (1, 1))
    assert context.checksum(str(tmp_path)) == first
    f.write_text("two")
    second = context.checksum(str(tmp_path))
    assert second != first
    os.chmod(f, 0o600)
    assert context.checksum(str(tmp_path)) != second


def test_is_archive(tmp_path: Path) -> None:
    import tarfile

    (tmp_path / "x").write_text("x")
    with tarfile.open(tmp_path / "a.tgz", "w:gz") as tf:
        tf.add(tmp_path / "x", "x")
    assert context.is_archive(str(tmp_path / "a.tgz"))
    assert not context.is_archive(str(tmp_path / "x"))
