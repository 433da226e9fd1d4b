"""Process identity and limits: users, groups, rlimits, prctl bits."""

from __future__ import annotations

import os
import resource

from isobox.linux import libc

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

RLIM_INFINITY_U64 = 0xFFFFFFFFFFFFFFFF

RLIMITS = {
    name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")
}


def set_rlimit(name: str, soft: int, hard: int) -> None:
    if name not in RLIMITS:
        raise ValueError(f"unknown rlimit {name!r}")
    def conv(v: int) -> int:
        return resource.RLIM_INFINITY if v < 0 or v >= RLIM_INFINITY_U64 else v
    resource.setrlimit(RLIMITS[name], (conv(soft), conv(hard)))


def set_no_new_privs() -> None:
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_dumpable(on: bool) -> None:
    libc.prctl(PR_SET_DUMPABLE, 1 if on else 0)


def set_child_subreaper() -> None:
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(sig: int) -> None:
    libc.prctl(PR_SET_PDEATHSIG, sig)


def switch_user(uid: int, gid: int, groups: list[int] | None, *,
                set_groups: bool = True) -> None:
    if set_groups:
        os.setgroups(list(groups or ()))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def home_of(uid: int, passwd: str = "/etc/passwd") -> str | None:
    """The home directory of uid from a passwd file read as text."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5]
    except OSError:
        return None
    return None


def write_oom_score_adj(value: int, pid: int | str = "self") -> None:
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(str(value))
