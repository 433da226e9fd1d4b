"""The newc writer: what it writes, read back by an independent reader."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from vmtest_util import read_cpio

from isobox.vm.cpio import CpioWriter


def test_round_trip_of_every_entry_type(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.write_bytes(bytes(range(256)) * 5000 + b"tail")  # not a multiple of 4
    source.chmod(0o751)
    out = io.BytesIO()
    w = CpioWriter(out)
    w.directory("/bin", 0o755, mtime=7)
    w.file("bin/hello", b"abc", 0o4755)
    w.file_from("bin/big", str(source))
    w.symlink("bin/sh", "busybox")
    w.char_device("dev-console", 5, 1, 0o600)
    w.char_device("whiteout", 0, 0, 0o000)
    w.finish()
    entries = read_cpio(out.getvalue())
    by_name = {e.name: e for e in entries}
    assert [e.name for e in entries] == ["bin", "bin/hello", "bin/big", "bin/sh", "dev-console",
                                        "whiteout", "TRAILER!!!"]
    assert stat.S_ISDIR(by_name["bin"].mode) and stat.S_IMODE(by_name["bin"].mode) == 0o755
    assert by_name["bin"].mtime == 7
    assert by_name["bin/hello"].data == b"abc"
    assert stat.S_IMODE(by_name["bin/hello"].mode) == 0o4755
    assert by_name["bin/big"].data == source.read_bytes()
    assert stat.S_IMODE(by_name["bin/big"].mode) == 0o751
    assert stat.S_ISLNK(by_name["bin/sh"].mode) and by_name["bin/sh"].data == b"busybox"
    assert stat.S_ISCHR(by_name["dev-console"].mode) and by_name["dev-console"].rdev == (5, 1)
    assert by_name["whiteout"].rdev == (0, 0)
    assert all(e.uid == 0 and e.gid == 0 for e in entries)
    inodes = [e.ino for e in entries[:-1]]
    assert len(set(inodes)) == len(inodes), "each entry its own inode: no accidental hardlinks"


def test_duplicate_and_empty_names_are_refused() -> None:
    w = CpioWriter(io.BytesIO())
    w.file("a", b"")
    with pytest.raises(ValueError):
        w.file("/a", b"")
    with pytest.raises(ValueError):
        w.directory("/")


def test_a_file_that_shrinks_while_archived_is_an_error(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"12345678")
    w = CpioWriter(io.BytesIO())
    real_fstat = __import__("os").fstat

    class Grown:
        def __init__(self, st: object) -> None:
            self._st = st

        def __getattr__(self, name: str) -> object:
            return 100 if name == "st_size" else getattr(self._st, name)

    monkeypatch.setattr("isobox.vm.cpio.os.fstat", lambda fd: Grown(real_fstat(fd)))
    with pytest.raises(OSError, match="changed size"):
        w.file_from("f", str(source))
