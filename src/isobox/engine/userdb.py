"""Docker's ``--user user[:group]`` and ``--group-add``, resolved against the
image's ``/etc/passwd`` and ``/etc/group``.

The files are read as text, never through NSS, and the rootfs is untrusted:
each file is opened with openat2 and RESOLVE_IN_ROOT relative to the rootfs,
so a symlink (absolute or full of ``..``) resolves inside the rootfs and
never on the host; only regular files are read, and at most 1 MiB of each.

The rules are those of runc's ``user.GetExecUser`` (which Docker uses):
numeric ids pass through even when no entry has them, names must exist,
supplementary groups come from ``/etc/group`` only when no group was given.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

import msgspec

from isobox.errors import InvalidArgument, Unavailable
from isobox.linux import libc

__all__ = ["MAX_FILE_SIZE", "ResolvedUser", "parse_group", "parse_passwd", "read_rootfs_file",
           "resolve_user", "resolve_user_text"]

MAX_FILE_SIZE = 1 << 20
MAX_ID = 2**31 - 1
_RANGE_ERROR = "uids and gids must be in range 0-2147483647"


class ResolvedUser(msgspec.Struct, frozen=True, kw_only=True):
    """Who the container's process runs as.

    ``additional_gids`` starts with the primary gid, as Docker's spec does
    (so ``id`` lists it among the groups), then the user's groups from
    /etc/group, then ``--group-add``; duplicates are dropped."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


class PasswdEntry(msgspec.Struct, frozen=True):
    name: str
    uid: int
    gid: int
    home: str


class GroupEntry(msgspec.Struct, frozen=True):
    name: str
    gid: int
    members: tuple[str, ...]


def _int(text: str) -> int | None:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def parse_passwd(text: str) -> list[PasswdEntry]:
    """``name:pass:uid:gid:gecos:home:shell`` lines; lines whose uid or gid is
    not a number are skipped (runc would read them as 0, i.e. root)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":") + [""] * 7
        uid, gid = _int(fields[2]), _int(fields[3])
        if uid is None or gid is None:
            continue
        out.append(PasswdEntry(fields[0], uid, gid, fields[5]))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    """``name:pass:gid:member,member`` lines; bad gids are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":") + [""] * 4
        gid = _int(fields[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip())
        out.append(GroupEntry(fields[0], gid, members))
    return out


def _check_range(value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(_RANGE_ERROR)
    return value


def resolve_user_text(user_spec: str, passwd: str | None, group: str | None,
                      group_add: Sequence[str] = ()) -> ResolvedUser:
    """Resolve ``user[:group]`` and ``--group-add`` against file contents
    (None: the file does not exist)."""
    user_arg, _, group_arg = user_spec.partition(":")
    uid_arg = _int(user_arg) if user_arg else None
    gid_arg = _int(group_arg) if group_arg else None
    users = parse_passwd(passwd) if passwd is not None else []
    groups = parse_group(group) if group is not None else []

    uid, gid, home = 0, 0, "/"
    if not user_arg:
        matched = [u for u in users if u.uid == 0]
    elif uid_arg is not None:
        matched = [u for u in users if u.uid == uid_arg]
    else:
        matched = [u for u in users if u.name == user_arg]
    name = ""
    if matched:
        name, uid, gid, home = matched[0].name, matched[0].uid, matched[0].gid, matched[0].home
    elif user_arg:
        if uid_arg is None:
            raise InvalidArgument(
                f"unable to find user {user_arg}: no matching entries in passwd file")
        uid = _check_range(uid_arg)

    sgids: list[int] = []
    if group_arg:
        found = [g for g in groups
                 if (g.gid == gid_arg if gid_arg is not None else g.name == group_arg)]
        if found:
            gid = found[0].gid
        elif gid_arg is None:
            raise InvalidArgument(
                f"unable to find group {group_arg}: no matching entries in group file")
        else:
            gid = _check_range(gid_arg)
    elif name:
        sgids = [g.gid for g in groups if name in g.members]

    added = _additional_groups(group_add, groups)
    gids: list[int] = []
    for g in (gid, *sgids, *added):
        if g not in gids:
            gids.append(g)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(gids), home=home or "/")


def _additional_groups(wanted: Sequence[str], groups: list[GroupEntry]) -> list[int]:
    """runc's ``GetAdditionalGroups``: a name or number per entry; a number
    needs no entry in /etc/group."""
    out = []
    for item in wanted:
        match = next((g for g in groups if g.name == item or str(g.gid) == item), None)
        if match is not None:
            out.append(match.gid)
            continue
        number = _int(item)
        if number is None:
            raise InvalidArgument(f"Unable to find group {item}")
        out.append(_check_range(number))
    return out


def read_rootfs_file(rootfs: str, path: str, limit: int = MAX_FILE_SIZE) -> str | None:
    """Read ``path`` (e.g. ``/etc/passwd``) inside an untrusted rootfs as text.

    Symlinks resolve with the rootfs as ``/`` (RESOLVE_IN_ROOT), magic links
    are refused. Returns None when the file does not exist; raises
    InvalidArgument when it is not a regular file or is larger than ``limit``.
    """
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidArgument(f"rootfs {rootfs}: {exc.strerror}") from None
    try:
        try:
            # O_NONBLOCK: opening a FIFO planted at the path must not hang.
            fd = libc.openat2(root_fd, path.lstrip("/"),
                              os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK,
                              resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if exc.errno == errno.ENOSYS:
                raise Unavailable("openat2 is not supported by this kernel") from None
            raise InvalidArgument(f"cannot open {path} in the image: {exc.strerror}") from None
    finally:
        os.close(root_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path} in the image is not a regular file")
        if st.st_size > limit:
            raise InvalidArgument(f"{path} in the image is larger than {limit} bytes")
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, min(65536, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InvalidArgument(f"{path} in the image is larger than {limit} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def resolve_user(rootfs: str, user_spec: str, group_add: Sequence[str] = ()) -> ResolvedUser:
    """Resolve Docker's ``-u`` and ``--group-add`` against the image at ``rootfs``."""
    passwd = read_rootfs_file(rootfs, "/etc/passwd")
    group = read_rootfs_file(rootfs, "/etc/group")
    return resolve_user_text(user_spec, passwd, group, group_add)
