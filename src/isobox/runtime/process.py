"""The container process's identity, applied in the last steps before execve.

Everything here runs in the forked child after it switched into the
container: it uses only modules imported before the switch, and never
imports, so no code from the image's filesystem is ever loaded.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import errno
import os
import signal
import stat
from types import SimpleNamespace

from isobox.errors import CannotInvoke, CommandNotFound
from isobox.linux import capabilities, console, identity, libc
from isobox.linux import seccomp as seccomp_mod
from isobox.oci.runtime_spec import Process, Seccomp

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Plan(SimpleNamespace):
    """A process to start in a container, with every name already parsed."""

    args: list[str]
    env: list[str]
    cwd: str
    uid: int
    gid: int
    groups: list[int] | None
    umask: int | None
    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int
    rlimits: list[tuple[str, int, int]]
    no_new_privileges: bool
    terminal: bool
    console_size: tuple[int, int] | None
    oom_score_adj: int | None
    seccomp: seccomp_mod.Program | None
    preserve_fds: int
    last_cap: int


def plan_for(process: Process, seccomp: Seccomp | None, last_cap: int,
             available: int, preserve_fds: int = 0, *, seccomp_cache: str | None = None) -> Plan:
    """Parse a process section. Capabilities the host itself lacks are left
    out rather than failing, so a privileged container gets what the host has.

    The seccomp filter is compiled to BPF here, in the runtime, before any
    fork (``seccomp_cache``: a directory of programs compiled before)."""
    caps = process.capabilities

    def mask(name: str) -> int:
        return capabilities.parse(getattr(caps, name) if caps else None, last_cap) & available

    return Plan(
        args=list(process.args or ()),
        env=list(process.env or ()),
        cwd=process.cwd or "/",
        uid=process.user.uid,
        gid=process.user.gid,
        groups=process.user.additional_gids,
        umask=process.user.umask,
        bounding=mask("bounding"), effective=mask("effective"), permitted=mask("permitted"),
        inheritable=mask("inheritable"), ambient=mask("ambient"),
        rlimits=[(r.type, r.soft, r.hard) for r in process.rlimits or ()],
        no_new_privileges=process.no_new_privileges,
        terminal=process.terminal,
        console_size=(process.console_size.height, process.console_size.width)
        if process.console_size else None,
        oom_score_adj=process.oom_score_adj,
        seccomp=seccomp_mod.program_for(seccomp, seccomp_cache) if seccomp is not None
        else None,
        preserve_fds=preserve_fds,
        last_cap=last_cap,
    )


def env_value(env: list[str], key: str) -> str | None:
    prefix = key + "="
    for item in reversed(env):
        if item.startswith(prefix):
            return item[len(prefix):]
    return None


def lookup_executable(name: str, env: list[str]) -> str:
    """Find the program as execvp would, inside the container's filesystem."""
    if "/" in name:
        candidates = [name]
    else:
        path = env_value(env, "PATH")
        candidates = [os.path.join(d or ".", name) for d in (path or DEFAULT_PATH).split(":")]
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISDIR(st.st_mode):
            raise CannotInvoke(f"exec: {name!r}: is a directory")
        if not st.st_mode & 0o111:
            raise CannotInvoke(f"exec: {name!r}: permission denied")
        return candidate
    if "/" in name:
        raise CommandNotFound(f"exec: {name!r}: no such file or directory")
    raise CommandNotFound(f"exec: {name!r}: executable file not found in $PATH")


def setup_terminal(plan: Plan, console_sock: socket.socket) -> None:
    """Open a pty inside the container, hand its master to whoever listens on
    the console socket, and make the slave our stdio and controlling tty."""
    master, slave = console.openpty()
    if plan.console_size:
        console.set_size(slave, *plan.console_size)
    console.send_fd(console_sock, master, "/dev/ptmx")
    os.close(master)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    console.make_controlling(0)
    if slave > 2:
        os.close(slave)


def enter_cwd(cwd: str) -> None:
    """chdir to the process's cwd, resolved inside the container's root:
    no magic link (/proc/self/fd/N, /proc/self/cwd) can name a host directory."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = libc.openat2(root, cwd, os.O_PATH | os.O_DIRECTORY,
                          resolve=libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        raise OSError(exc.errno, f"chdir to cwd ({cwd!r}) set in config.json failed: "
                      f"{os.strerror(exc.errno or 0)}") from None
    finally:
        os.close(root)
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)
    try:
        os.getcwd()
    except OSError:
        raise OSError(errno.EPERM, f"cwd ({cwd!r}) is outside the container") from None


def apply_limits(plan: Plan) -> None:
    for name, soft, hard in plan.rlimits:
        identity.set_rlimit(name, soft, hard)


def apply_identity(plan: Plan, *, set_groups: bool = True) -> None:
    """Bounding set, user and groups, then the other capability sets."""
    if plan.seccomp is not None and not plan.no_new_privileges:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
        # while we still have it, as runc does.
        seccomp_mod.load_program(plan.seccomp)
    capabilities.drop_bounding(plan.bounding, plan.last_cap)
    capabilities.set_keepcaps(True)
    identity.switch_user(plan.uid, plan.gid, plan.groups, set_groups=set_groups)
    capabilities.set_keepcaps(False)
    capabilities.set_sets(plan.effective, plan.permitted, plan.inheritable)
    # A capability can only be ambient if it is also permitted and inheritable;
    # runc silently leaves the others out (``runc spec`` asks for them).
    ambient = plan.ambient & plan.permitted & plan.inheritable
    if ambient:
        capabilities.raise_ambient(ambient, plan.last_cap)
    if plan.umask is not None:
        os.umask(plan.umask)
    if plan.no_new_privileges:
        identity.set_no_new_privs()


def final_env(plan: Plan) -> list[str]:
    env = list(plan.env)
    if env_value(env, "HOME") is None:
        env.append(f"HOME={identity.home_of(plan.uid) or '/'}")
    return env


def exec_now(plan: Plan, path: str, env: list[str]) -> NoReturn:
    """Mark every fd the container must not see close-on-exec, then execve.

    Raises OSError if execve fails; the caller reports it on the sync socket,
    which closes by itself when execve succeeds."""
    if plan.seccomp is not None and plan.no_new_privileges:
        seccomp_mod.load_program(plan.seccomp)
    libc.mark_cloexec_from(3 + plan.preserve_fds)
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal survives execve,
    # and the container must start with the default dispositions, as with runc.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    envp = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            envp[key] = value
    os.execve(path, plan.args, envp)
