"""Seccomp filters compiled through libseccomp really filter: each check runs in
a forked child that loads the filter, makes the syscall and reports through a
pipe; the parent always reaps it."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import resource
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from isobox.errors import InvalidArgument, Unavailable
from isobox.linux import seccomp
from isobox.oci.runtime_spec import Seccomp, SeccompArg, SeccompSyscall
from isobox.oci.seccomp_profile import docker_default_profile, to_oci

try:
    seccomp._lib()
except Unavailable as exc:  # pragma: no cover - host without libseccomp
    pytest.skip(str(exc), allow_module_level=True)

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="syscall numbers below are x86_64's")

DOCKER_DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]

SYS_UMASK = 95
SYS_PERSONALITY = 135
SYS_UNSHARE = 272
SYS_ADD_KEY = 248
SYS_KEYCTL = 250
SYS_CLONE3 = 435
SYS_SETNS = 308
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
CLONE_NEWUSER = 0x10000000
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int


def _host_kernel() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", platform.release())
    assert found is not None
    return int(found[1]), int(found[2])


def raw_syscall(nr: int, *args: Any) -> int:
    """The errno of a raw syscall, 0 on success."""
    ctypes.set_errno(0)
    res = _libc.syscall(ctypes.c_long(nr), *args)
    return ctypes.get_errno() if res == -1 else 0


def os_errno(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or -1
    return 0


def run_child(spec: Seccomp, probe: Callable[[], object], *,
              no_new_privs: bool = True,
              before_load: Callable[[], None] | None = None,
              program: seccomp.Program | None = None) -> tuple[int, Any]:
    """Fork; the child compiles and loads ``spec`` (or loads ``program``, as
    the runtime does), then runs ``probe`` and sends its JSON result.
    Returns (wait status, result)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must never return into pytest
        code = 0
        try:
            os.close(r)
            # A SIGSYS kill must not leave a core dump behind.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            if no_new_privs:
                _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if before_load is not None:
                before_load()
            if program is not None:
                seccomp.load_program(program)
            else:
                with seccomp.compile_filter(spec) as filt:
                    seccomp.load(filt)
            result: Any = {"ok": probe()}
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}",
                      "errno": getattr(exc, "errno", None), "tb": traceback.format_exc()}
            code = 1
        try:
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as reader:
        while chunk := reader.read():
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    return status, json.loads(data) if data else None


def ok(status: int, result: Any) -> Any:
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, result
    return result["ok"]


def allow_default(*syscalls: SeccompSyscall, **kw: Any) -> Seccomp:
    return Seccomp(default_action="SCMP_ACT_ALLOW", syscalls=list(syscalls), **kw)


def test_errno_action(tmp_path: Any) -> None:
    spec = allow_default(
        SeccompSyscall(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=38))

    def probe() -> list[int]:
        return [os_errno(lambda: os.mkdir(tmp_path / "blocked")),
                os_errno(lambda: os.rmdir(tmp_path))]

    blocked, rmdir = ok(*run_child(spec, probe))
    assert blocked == errno.ENOSYS
    assert rmdir == errno.ENOTEMPTY or rmdir == 0  # rmdir itself is not filtered
    assert not (tmp_path / "blocked").exists()


def test_program_is_libseccomps_bpf_cached_and_filters(tmp_path: Any) -> None:
    spec = allow_default(
        SeccompSyscall(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO", errno_ret=38),
        flags=["SECCOMP_FILTER_FLAG_LOG"])
    cache = tmp_path / "cache"
    first = seccomp.program_for(spec, str(cache))
    with seccomp.compile_filter(spec) as filt:
        assert first.code == filt.export_bpf()
    assert first.flags == 2  # SECCOMP_FILTER_FLAG_LOG, passed to seccomp(2)
    (entry,) = cache.iterdir()
    assert entry.read_bytes() == first.code
    assert oct(entry.stat().st_mode & 0o777) == oct(0o600)
    assert seccomp.program_for(spec, str(cache)).code == first.code
    # Something that is not a program is compiled again and replaced.
    entry.write_bytes(b"not bpf")
    assert seccomp.program_for(spec, str(cache)).code == first.code
    assert entry.read_bytes() == first.code
    # Another profile is another entry.
    other = allow_default(SeccompSyscall(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO"))
    assert seccomp.program_for(other, str(cache)).code != first.code
    assert len(list(cache.iterdir())) == 2

    target = tmp_path / "blocked"
    assert ok(*run_child(spec, lambda: os_errno(lambda: os.mkdir(target)),
                         program=seccomp.program_for(spec, str(cache)))) == errno.ENOSYS
    assert not target.exists()


def test_program_refuses_what_is_not_bpf() -> None:
    with pytest.raises(InvalidArgument):
        seccomp.Program(b"", 0)
    with pytest.raises(InvalidArgument):
        seccomp.Program(b"\0" * 12, 0)
    with pytest.raises(InvalidArgument):
        seccomp.program_for(allow_default(flags=["SECCOMP_FILTER_FLAG_BOGUS"]))


def test_errno_defaults_to_eperm(tmp_path: Any) -> None:
    spec = allow_default(SeccompSyscall(names=["mkdir", "mkdirat"], action="SCMP_ACT_ERRNO"))
    assert ok(*run_child(spec, lambda: os_errno(lambda: os.mkdir(tmp_path / "x")))) == errno.EPERM


def test_arg_conditioned_rule() -> None:
    spec = allow_default(SeccompSyscall(
        names=["personality"], action="SCMP_ACT_ERRNO", errno_ret=errno.EACCES,
        args=[SeccompArg(index=0, value=0xFFFFFFFF, op="SCMP_CMP_EQ")]))

    def probe() -> list[int]:
        return [raw_syscall(SYS_PERSONALITY, ctypes.c_ulong(0xFFFFFFFF)),
                raw_syscall(SYS_PERSONALITY, ctypes.c_ulong(0))]

    assert ok(*run_child(spec, probe)) == [errno.EACCES, 0]


def test_two_args_same_rule_is_and() -> None:
    spec = allow_default(SeccompSyscall(
        names=["kill"], action="SCMP_ACT_ERRNO", errno_ret=errno.EXDEV,
        args=[SeccompArg(index=0, value=0, op="SCMP_CMP_GT"),
              SeccompArg(index=1, value=0, op="SCMP_CMP_EQ")]))

    def probe() -> list[int]:
        return [os_errno(lambda: os.kill(os.getpid(), 0)),
                os_errno(lambda: os.kill(os.getpid(), signal.SIGWINCH)),
                os_errno(lambda: os.kill(0, 0))]

    # Blocked only when pid > 0 AND sig == 0.
    assert ok(*run_child(spec, probe)) == [errno.EXDEV, 0, 0]


def test_same_arg_twice_becomes_separate_rules() -> None:
    spec = allow_default(SeccompSyscall(
        names=["kill"], action="SCMP_ACT_ERRNO", errno_ret=errno.EXDEV,
        args=[SeccompArg(index=1, value=0, op="SCMP_CMP_EQ"),
              SeccompArg(index=1, value=signal.SIGURG, op="SCMP_CMP_EQ")]))

    def probe() -> list[int]:
        me = os.getpid()
        return [os_errno(lambda: os.kill(me, 0)),
                os_errno(lambda: os.kill(me, signal.SIGURG)),
                os_errno(lambda: os.kill(me, signal.SIGWINCH))]

    assert ok(*run_child(spec, probe)) == [errno.EXDEV, errno.EXDEV, 0]


def test_masked_eq() -> None:
    spec = allow_default(SeccompSyscall(
        names=["umask"], action="SCMP_ACT_ERRNO", errno_ret=errno.EPERM,
        args=[SeccompArg(index=0, value=0o077, value_two=0o077, op="SCMP_CMP_MASKED_EQ")]))

    def probe() -> list[int]:
        return [raw_syscall(SYS_UMASK, ctypes.c_uint(0o777)),
                raw_syscall(SYS_UMASK, ctypes.c_uint(0o022))]

    assert ok(*run_child(spec, probe)) == [errno.EPERM, 0]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_kill_actions_deliver_sigsys(action: str, tmp_path: Any) -> None:
    spec = allow_default(SeccompSyscall(names=["mkdir", "mkdirat"], action=action))
    status, result = run_child(spec, lambda: os.mkdir(tmp_path / "never"))
    assert os.WIFSIGNALED(status), result
    assert os.WTERMSIG(status) == signal.SIGSYS
    assert not (tmp_path / "never").exists()


def test_log_and_trace_actions_load() -> None:
    # LOG allows (and logs); TRACE without a tracer fails the syscall with ENOSYS.
    spec = allow_default(
        SeccompSyscall(names=["getppid"], action="SCMP_ACT_LOG"),
        SeccompSyscall(names=["personality"], action="SCMP_ACT_TRACE", errno_ret=7),
        flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC",
               "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    )

    def probe() -> list[int]:
        return [os.getppid(), raw_syscall(SYS_PERSONALITY, ctypes.c_ulong(0xFFFFFFFF))]

    ppid, personality = ok(*run_child(spec, probe))
    assert ppid == os.getpid()
    assert personality == errno.ENOSYS


def test_docker_default_profile() -> None:
    spec = to_oci(docker_default_profile(), capabilities=DOCKER_DEFAULT_CAPS,
                  arch="x86_64", kernel=_host_kernel())

    def probe() -> dict[str, Any]:
        a, b = socket.socketpair()
        a.sendall(b"hi")
        echoed = b.recv(2)
        a.close()
        b.close()
        with open("/proc/self/status", encoding="ascii") as f:
            seccomp_mode = next(line.split()[1] for line in f if line.startswith("Seccomp:"))
        return {
            "pid": os.getpid() > 0,
            "echo": echoed.decode(),
            "seccomp": seccomp_mode,
            "unshare": raw_syscall(SYS_UNSHARE, ctypes.c_int(CLONE_NEWUSER)),
            "add_key": raw_syscall(SYS_ADD_KEY, b"user", b"isobox-test", b"x",
                                   ctypes.c_size_t(1), ctypes.c_int(KEY_SPEC_SESSION_KEYRING)),
            "keyctl": raw_syscall(SYS_KEYCTL, ctypes.c_int(KEYCTL_GET_KEYRING_ID),
                                  ctypes.c_int(KEY_SPEC_SESSION_KEYRING), ctypes.c_int(0)),
            "clone3": raw_syscall(SYS_CLONE3, None, ctypes.c_size_t(0)),
            "vsock": os_errno(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)),
            "personality_query": raw_syscall(SYS_PERSONALITY, ctypes.c_ulong(0xFFFFFFFF)),
            "personality_other": raw_syscall(SYS_PERSONALITY, ctypes.c_ulong(0x0040000)),
            "fork_ok": _fork_and_reap(),
        }

    result = ok(*run_child(spec, probe))
    assert result["pid"] and result["echo"] == "hi"
    assert result["seccomp"] == "2"
    assert result["unshare"] == errno.EPERM
    assert result["add_key"] == errno.EPERM
    assert result["keyctl"] == errno.EPERM
    assert result["clone3"] == errno.ENOSYS  # so libc falls back to clone
    assert result["vsock"] == errno.EPERM
    assert result["personality_query"] == 0
    assert result["personality_other"] == errno.EPERM
    assert result["fork_ok"] is True


def _fork_and_reap() -> bool:
    pid = os.fork()  # clone without namespace flags is allowed
    if pid == 0:
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_docker_default_profile_with_sys_admin_allows_setns() -> None:
    # setns(-1) fails with EBADF when the filter lets it through, EPERM when not.
    def probe() -> list[int]:
        return [raw_syscall(SYS_SETNS, ctypes.c_int(-1), ctypes.c_int(0)),
                os_errno(lambda: os.umask(0o022))]

    default = to_oci(docker_default_profile(), capabilities=DOCKER_DEFAULT_CAPS)
    admin = to_oci(docker_default_profile(), capabilities=[*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert ok(*run_child(default, probe)) == [errno.EPERM, 0]
    assert ok(*run_child(admin, probe)) == [errno.EBADF, 0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_load_error_is_oserror_with_errno() -> None:
    # Without no_new_privs and without CAP_SYS_ADMIN the kernel refuses: EACCES, raw.
    status, result = run_child(allow_default(), lambda: None, no_new_privs=False,
                               before_load=lambda: os.setresuid(65534, 65534, 65534))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert result["error"].startswith("PermissionError") and result["errno"] == errno.EACCES


def test_compile_skips_unknown_names_and_default_duplicates() -> None:
    spec = Seccomp(
        default_action="SCMP_ACT_ERRNO", default_errno_ret=1,
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        syscalls=[
            SeccompSyscall(names=["read", "no_such_syscall_from_the_future"],
                           action="SCMP_ACT_ALLOW"),
            SeccompSyscall(names=["write"], action="SCMP_ACT_ERRNO", errno_ret=1),  # = default
            SeccompSyscall(names=["socketcall", "chown32"], action="SCMP_ACT_ALLOW"),  # x86 only
        ])
    with seccomp.compile_filter(spec) as filt:
        bpf = filt.export_bpf()
    assert bpf and len(bpf) % 8 == 0
    with pytest.raises(ValueError, match="released"):
        filt.export_bpf()


def test_rule_equal_to_default_errno_differs() -> None:
    # ERRNO(1) default, ERRNO(38) rule: a different action, so it is kept.
    base = Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[])
    with_rule = Seccomp(default_action="SCMP_ACT_ERRNO", syscalls=[
        SeccompSyscall(names=["clone3"], action="SCMP_ACT_ERRNO", errno_ret=38)])
    with seccomp.compile_filter(base) as a, seccomp.compile_filter(with_rule) as b:
        assert a.export_bpf() != b.export_bpf()


def _sys(**kw: Any) -> SeccompSyscall:
    fields: dict[str, Any] = {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}
    fields.update(kw)
    return SeccompSyscall(**fields)


@pytest.mark.parametrize(("spec", "message"), [
    (Seccomp(default_action="SCMP_ACT_BOGUS"), "unknown action 'SCMP_ACT_BOGUS'"),
    (allow_default(_sys(action="SCMP_ACT_NOPE")), "unknown action 'SCMP_ACT_NOPE'"),
    (allow_default(_sys(action="SCMP_ACT_NOTIFY")), "SCMP_ACT_NOTIFY needs listenerPath"),
    (Seccomp(default_action="SCMP_ACT_NOTIFY"), "SCMP_ACT_NOTIFY"),
    (allow_default(architectures=["SCMP_ARCH_PDP11"]), "unknown architecture 'SCMP_ARCH_PDP11'"),
    (allow_default(architectures=["x86_64"]), "unknown architecture 'x86_64'"),
    (allow_default(flags=["SECCOMP_FILTER_FLAG_BOGUS"]), "unknown flag"),
    (allow_default(_sys(args=[SeccompArg(index=0, value=1, op="SCMP_CMP_LIKE")])),
     "unknown arg op 'SCMP_CMP_LIKE'"),
    (allow_default(_sys(args=[SeccompArg(index=6, value=1, op="SCMP_CMP_EQ")])),
     "arg index 6"),
    (allow_default(_sys(args=[SeccompArg(index=0, value=-1, op="SCMP_CMP_EQ")])),
     "not a 64-bit unsigned"),
    (allow_default(_sys(names=["mkdir", ""])), "empty syscall name"),
    (allow_default(_sys(names=[])), "names no syscall"),
    (allow_default(_sys(errno_ret=70000)), "errnoRet 70000"),
    (Seccomp(default_action="SCMP_ACT_ERRNO", default_errno_ret=-1), "errnoRet -1"),
])
def test_invalid_specs(spec: Seccomp, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)) as info:
        seccomp.compile_filter(spec)
    assert "\n" not in str(info.value)
