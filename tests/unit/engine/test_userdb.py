"""``-u user[:group]`` and ``--group-add`` against an image's /etc files, and
reading those files from an untrusted rootfs without leaving it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from isobox.engine.userdb import (
    ResolvedUser,
    parse_group,
    parse_passwd,
    read_rootfs_file,
    resolve_user,
    resolve_user_text,
)
from isobox.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
app:x:1000:1000:App,,,:/home/app:/bin/sh
broken:x:notanumber:0::/:/bin/sh
twin:x:1001:1001::/home/twin1:/bin/sh
twin:x:1002:1002::/home/twin2:/bin/sh
"""
GROUP = """\
root:x:0:
wheel:x:10:root,app
staff:x:50:app
app:x:1000:
audio:x:29:
twin:x:1001:
"""


@pytest.mark.parametrize(("spec", "expected"), [
    ("", ResolvedUser(uid=0, gid=0, additional_gids=(0, 10), home="/root")),
    ("root", ResolvedUser(uid=0, gid=0, additional_gids=(0, 10), home="/root")),
    ("app", ResolvedUser(uid=1000, gid=1000, additional_gids=(1000, 10, 50),
                         home="/home/app")),
    ("1000", ResolvedUser(uid=1000, gid=1000, additional_gids=(1000, 10, 50),
                          home="/home/app")),
    # numeric ids pass through without an entry
    ("4242", ResolvedUser(uid=4242, gid=0, additional_gids=(0,), home="/")),
    ("4242:4343", ResolvedUser(uid=4242, gid=4343, additional_gids=(4343,), home="/")),
    # an explicit group replaces the primary one and drops supplementary groups
    ("app:audio", ResolvedUser(uid=1000, gid=29, additional_gids=(29,), home="/home/app")),
    ("app:50", ResolvedUser(uid=1000, gid=50, additional_gids=(50,), home="/home/app")),
    ("daemon:777", ResolvedUser(uid=1, gid=777, additional_gids=(777,), home="/usr/sbin")),
    # first match wins
    ("twin", ResolvedUser(uid=1001, gid=1001, additional_gids=(1001,), home="/home/twin1")),
])
def test_resolve(spec: str, expected: ResolvedUser) -> None:
    assert resolve_user_text(spec, PASSWD, GROUP) == expected


def test_group_add() -> None:
    user = resolve_user_text("app", PASSWD, GROUP, ["audio", "5000", "wheel", "29"])
    assert user.additional_gids == (1000, 10, 50, 29, 5000)
    with pytest.raises(InvalidArgument, match=r"^Unable to find group nosuch$"):
        resolve_user_text("app", PASSWD, GROUP, ["nosuch"])


@pytest.mark.parametrize(("spec", "message"), [
    ("nosuch", "unable to find user nosuch: no matching entries in passwd file"),
    ("broken", "unable to find user broken: no matching entries in passwd file"),
    ("app:nosuch", "unable to find group nosuch: no matching entries in group file"),
    ("4294967296", "uids and gids must be in range 0-2147483647"),
    ("0:2147483648", "uids and gids must be in range 0-2147483647"),
])
def test_resolve_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}$"):
        resolve_user_text(spec, PASSWD, GROUP)


def test_missing_files() -> None:
    assert resolve_user_text("", None, None) == ResolvedUser(additional_gids=(0,))
    assert resolve_user_text("12:34", None, None, ["56"]) == ResolvedUser(
        uid=12, gid=34, additional_gids=(34, 56))
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        resolve_user_text("app", None, None)


def test_parsers_skip_malformed_lines() -> None:
    assert [u.name for u in parse_passwd(PASSWD)] == ["root", "daemon", "app", "twin", "twin"]
    assert parse_passwd("short:x:5\n") == []  # no gid field
    assert resolve_user_text("short", "short:x:5:6\n", None).home == "/"
    assert parse_group("g:x:7:a, b ,,\nbad:x:y:\n")[0].members == ("a", "b")


# --- reading from an untrusted rootfs --------------------------------------------------------

@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    return root


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A file outside the rootfs that a hostile image tries to make us read."""
    secret = tmp_path / "host-passwd"
    secret.write_text("evil:x:0:0::/:/bin/sh\n")
    return secret


def test_reads_the_images_files(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").write_text(PASSWD)
    (rootfs / "etc" / "group").write_text(GROUP)
    assert resolve_user(str(rootfs), "app", ["audio"]) == ResolvedUser(
        uid=1000, gid=1000, additional_gids=(1000, 10, 50, 29), home="/home/app")


def test_absent_files(rootfs: Path) -> None:
    assert read_rootfs_file(str(rootfs), "/etc/passwd") is None
    (rootfs / "etc").rmdir()
    (rootfs / "etc").write_text("not a directory")
    assert read_rootfs_file(str(rootfs), "/etc/passwd") is None
    assert resolve_user(str(rootfs), "7:8") == ResolvedUser(uid=7, gid=8, additional_gids=(8,))


def test_absolute_symlink_stays_in_the_rootfs(rootfs: Path, host_secret: Path) -> None:
    (rootfs / "etc" / "passwd").symlink_to(host_secret)
    assert read_rootfs_file(str(rootfs), "/etc/passwd") is None
    # the same path inside the rootfs is what it gets
    inside = rootfs / str(host_secret).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("app:x:5:5::/home/app:/bin/sh\n")
    assert resolve_user(str(rootfs), "app").uid == 5
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        resolve_user(str(rootfs), "evil")


def test_dotdot_symlink_stays_in_the_rootfs(rootfs: Path, host_secret: Path) -> None:
    depth = len(rootfs.parts)
    (rootfs / "etc" / "passwd").symlink_to("../" * (depth + 3) + str(host_secret).lstrip("/"))
    assert read_rootfs_file(str(rootfs), "/etc/passwd") is None
    with pytest.raises(InvalidArgument, match="unable to find user evil"):
        resolve_user(str(rootfs), "evil")


def test_symlinked_etc_directory(rootfs: Path, host_secret: Path) -> None:
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to(host_secret.parent)
    assert read_rootfs_file(str(rootfs), "/etc/host-passwd") is None
    (rootfs / "real").mkdir()
    (rootfs / "real" / "passwd").write_text("app:x:9:9::/:/bin/sh\n")
    (rootfs / "etc").unlink()
    (rootfs / "etc").symlink_to("/real")
    assert resolve_user(str(rootfs), "app").uid == 9


def test_magic_link_refused(rootfs: Path) -> None:
    (rootfs / "proc" / "self").mkdir(parents=True)
    (rootfs / "etc" / "passwd").symlink_to("/proc/self/root/etc/passwd")
    assert read_rootfs_file(str(rootfs), "/etc/passwd") is None


def test_not_a_regular_file(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").mkdir()
    with pytest.raises(InvalidArgument, match="not a regular file"):
        read_rootfs_file(str(rootfs), "/etc/passwd")


def test_fifo_does_not_hang(rootfs: Path) -> None:
    os.mkfifo(rootfs / "etc" / "passwd")
    result: list[BaseException | None] = []

    def target() -> None:
        try:
            read_rootfs_file(str(rootfs), "/etc/passwd")
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], InvalidArgument)


def test_device_node_refused(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").symlink_to("/dev/zero")
    (rootfs / "dev").mkdir()
    if os.geteuid() == 0:
        os.mknod(rootfs / "dev" / "zero", 0o20666, os.makedev(1, 5))
        with pytest.raises(InvalidArgument, match="not a regular file"):
            read_rootfs_file(str(rootfs), "/etc/passwd")
    else:
        assert read_rootfs_file(str(rootfs), "/etc/passwd") is None


def test_size_cap(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").write_bytes(b"x" * 101)
    with pytest.raises(InvalidArgument, match="larger than 100 bytes"):
        read_rootfs_file(str(rootfs), "/etc/passwd", limit=100)
    assert read_rootfs_file(str(rootfs), "/etc/passwd", limit=101) == "x" * 101
    big = rootfs / "etc" / "group"
    with big.open("wb") as f:
        f.truncate((1 << 20) + 1)
    with pytest.raises(InvalidArgument, match="larger than"):
        resolve_user(str(rootfs), "")


def test_invalid_utf8_is_replaced(rootfs: Path) -> None:
    (rootfs / "etc" / "passwd").write_bytes(b"\xffbad:x:1:1::/:/bin/sh\napp:x:2:2::/:/bin/sh\n")
    assert resolve_user(str(rootfs), "app").uid == 2
