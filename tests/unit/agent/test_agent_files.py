"""cp into a running VM container, the guest's part, run on the host against
a directory standing in for the container's root."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from isobox.agent import files
from isobox.agent import requests as rq
from isobox.agent.paths import Paths
from isobox.errors import InvalidArgument


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(str(tmp_path / "state"))
    root = Path(p.rootfs)
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "up").symlink_to("/")  # absolute: resolved in the root, never on the host
    (root / "etc-link").symlink_to("etc")
    return p


def test_stat_path_resolves_in_the_root(paths: Paths) -> None:
    assert files.stat_path(paths, "/etc-link", True) == {
        "kind": "dir", "path": "/etc", "parent_missing": False}
    assert files.stat_path(paths, "/etc-link", False)["kind"] == "other"  # the link itself
    assert files.stat_path(paths, "/up/etc/passwd", True)["kind"] == "file"
    assert files.stat_path(paths, "/new", True) == {
        "kind": None, "path": "/new", "parent_missing": False}
    assert files.stat_path(paths, "/no/such/x", True)["parent_missing"] is True


def _extract(paths: Paths, directory: str, data: bytes) -> tuple[int, bytes, bytes]:
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = files.start_extract(paths, (stdin_r, out_w, err_w), directory, "keep")
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    with os.fdopen(stdin_w, "wb") as w:
        w.write(data)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(out_r, "rb") as o, os.fdopen(err_r, "rb") as e:
        return os.waitstatus_to_exitcode(status), o.read(), e.read()


def _tar(*members: tuple[str, bytes, bytes]) -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = data.decode()
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return stream.getvalue()


def test_extract_into_a_directory_through_a_link_in_the_root(paths: Paths,
                                                             tmp_path: Path) -> None:
    code, out, err = _extract(paths, "/up/etc", _tar(("hello", tarfile.REGTYPE, b"hi\n")))
    assert (code, out, err) == (0, b"3\n", b"")
    assert (Path(paths.rootfs) / "etc" / "hello").read_text() == "hi\n"


def test_a_hostile_archive_writes_nothing_outside(paths: Paths, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = _tar(("esc", tarfile.SYMTYPE, str(outside).encode()),
                   ("esc/pwned", tarfile.REGTYPE, b"x"))
    code, _, err = _extract(paths, "/etc", hostile)
    assert code == 1 and err.strip()
    assert list(outside.iterdir()) == []
    code, _, err = _extract(paths, "/etc/passwd", _tar(("x", tarfile.REGTYPE, b"x")))
    assert code == 1 and b"not a directory" in err


def test_requests_refused() -> None:
    assert rq.parse_stat_path({"path": "/a/../b", "follow": True}) == ("/b", True)
    for bad in ({"path": "relative"}, {"path": "/a\0b"}, {}):
        with pytest.raises(InvalidArgument):
            rq.parse_stat_path(bad)
    assert rq.parse_extract({"stream": 2, "directory": "/d", "owner": [1, 2]}).owner == (1, 2)
    for owner in ("root", [1], [1, -2], [True, 0]):
        with pytest.raises(InvalidArgument):
            rq.parse_extract({"stream": 2, "directory": "/d", "owner": owner})


def test_top_arguments_and_command_output() -> None:
    from isobox.agent import command
    from isobox.errors import IsoboxError

    assert rq.parse_top({"args": ["-o", "pid,args"]}) == ["-o", "pid,args"]
    assert rq.parse_top({}) == []
    for bad in ({"args": "-ef"}, {"args": [""]}, {"args": ["a\0b"]}, {"args": ["x"] * 33}):
        with pytest.raises(InvalidArgument):
            rq.parse_top(bad)
    assert command.output(["/bin/sh", "-c", "echo out; echo err >&2"]) == b"out\nerr\n"
    with pytest.raises(IsoboxError, match="bad option"):
        command.output(["/bin/sh", "-c", "echo 'bad option' >&2; exit 2"])
