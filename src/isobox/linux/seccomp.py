"""Compile the OCI ``linux.seccomp`` section with libseccomp and load it.

The binding is ctypes over ``libseccomp.so.2``, loaded on first use. Its
functions return a negative errno (not -1 with errno set); every failure is
raised as a typed error: :class:`~isobox.errors.InvalidArgument` for a spec
the filter cannot express, :class:`~isobox.errors.Unavailable` for a missing
library or kernel feature, ``OSError`` with the real errno from :func:`load`.

Semantics follow runc: syscall names this libseccomp does not know are
skipped (profiles list syscalls of newer kernels), rules whose action equals
the default action are skipped, args with a repeated index become separate
rules, and ``SCMP_FLTATR_CTL_NNP`` is off so the runtime sets
``no_new_privs`` itself. Not supported: ``SCMP_ACT_NOTIFY`` (no listener
agent), and runc's ENOSYS patching of syscalls newer than the profile.

libseccomp is loaded from the host on the first compile: call
:func:`compile_filter` before switching into the container's root, and
:func:`load` last, just before exec.

The runtime's path is :func:`program_for` then :func:`load_program`: the
filter is compiled and turned into BPF once, before any fork, and the
container's init only makes one ``seccomp()`` call. libseccomp takes ~13 ms
to compile Docker's default profile and generate its BPF, so programs are
cached in a directory (content-addressed by the profile, the libseccomp
version and the kernel), which makes every later container with the same
profile skip libseccomp.

Import-light: the stdlib, :mod:`isobox.linux.libc` and :mod:`isobox.errors`.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from types import TracebackType

from isobox.errors import InvalidArgument, Unavailable
from isobox.linux import libc
from isobox.linux.files import atomic_write
from isobox.linux.libc import load_library

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.oci.runtime_spec import Seccomp, SeccompArg, SeccompSyscall

__all__ = ["Program", "SeccompFilter", "compile_filter", "load", "load_program",
           "program_for"]

# Actions (seccomp.h).
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000
_RET_DATA = 0xFFFF

_SIMPLE_ACTIONS = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,  # runc: KILL is KILL_THREAD
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
}
_DATA_ACTIONS = {"SCMP_ACT_ERRNO": _ACT_ERRNO, "SCMP_ACT_TRACE": _ACT_TRACE}

# enum scmp_filter_attr.
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_TSYNC = 4
_FLTATR_CTL_LOG = 6
_FLTATR_CTL_SSB = 7
_FLTATR_API_SYSRAWRC = 9

# OCI flag → libseccomp attribute; None: accepted, nothing to set.
_FLAGS: dict[str, int | None] = {
    "SECCOMP_FILTER_FLAG_TSYNC": _FLTATR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _FLTATR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _FLTATR_CTL_SSB,
    # Only changes how a notify listener waits, and the kernel refuses it
    # without one; SCMP_ACT_NOTIFY is refused below, so it is a no-op here.
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": None,
}

# enum scmp_compare.
_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# seccomp(2), for loading a program without libseccomp (x86_64 number, as in libc).
_SYS_SECCOMP = 317
_SECCOMP_SET_MODE_FILTER = 1
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_MAXINSNS = 4096

# OCI flag -> seccomp(2) flag, as libseccomp's seccomp_load passes them.
_KERNEL_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

_NR_SCMP_ERROR = -1  # seccomp_syscall_resolve_name: unknown name
_MAX_ARGS = 6
_U64_MAX = (1 << 64) - 1


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Lib:
    """libseccomp's functions, with argtypes and restype declared."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        def fn(name: str, restype: Any, *argtypes: Any) -> Any:
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = list(argtypes)
            return f

        ctx, u32 = ctypes.c_void_p, ctypes.c_uint32
        self.init = fn("seccomp_init", ctx, u32)
        self.release = fn("seccomp_release", None, ctx)
        self.load = fn("seccomp_load", ctypes.c_int, ctx)
        self.attr_set = fn("seccomp_attr_set", ctypes.c_int, ctx, ctypes.c_int, u32)
        self.arch_native = fn("seccomp_arch_native", u32)
        self.arch_resolve_name = fn("seccomp_arch_resolve_name", u32, ctypes.c_char_p)
        self.arch_add = fn("seccomp_arch_add", ctypes.c_int, ctx, u32)
        self.syscall_resolve_name = fn("seccomp_syscall_resolve_name", ctypes.c_int,
                                       ctypes.c_char_p)
        self.rule_add_array = fn("seccomp_rule_add_array", ctypes.c_int, ctx, u32, ctypes.c_int,
                                 ctypes.c_uint, ctypes.POINTER(_ArgCmp))
        self.export_bpf = fn("seccomp_export_bpf", ctypes.c_int, ctx, ctypes.c_int)
        version = fn("seccomp_version", ctypes.POINTER(_Version))().contents
        #: "2.5.4": part of the cache key of compiled programs.
        self.version = f"{version.major}.{version.minor}.{version.micro}"


class _Version(ctypes.Structure):
    """struct scmp_version."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _Fprog(ctypes.Structure):
    """struct sock_fprog."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


@functools.lru_cache(maxsize=1)
def _lib() -> _Lib:
    try:
        return _Lib(load_library("libseccomp.so.2"))
    except OSError as exc:
        raise Unavailable(f"seccomp needs libseccomp: {exc.strerror or exc}") from exc


class SeccompFilter:
    """A compiled, not yet loaded filter: owns one ``scmp_filter_ctx``."""

    def __init__(self, lib: _Lib, ctx: int) -> None:
        self._lib = lib
        self._ctx: int | None = ctx

    @property
    def ctx(self) -> int:
        if self._ctx is None:
            raise ValueError("seccomp filter already released")
        return self._ctx

    def export_bpf(self) -> bytes:
        """The BPF program the kernel would get (for tests and debugging)."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            rc = self._lib.export_bpf(self.ctx, fd)
            if rc < 0:
                raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            self._lib.release(ctx)

    def __enter__(self) -> SeccompFilter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _errno_ret(value: int | None, what: str) -> int:
    if value is None:
        return errno.EPERM
    if not 0 <= value <= _RET_DATA:
        raise InvalidArgument(f"seccomp: errnoRet {value} of {what} is out of range 0..65535")
    return value


def _action(name: str, errno_ret: int | None, what: str) -> int:
    if name in _SIMPLE_ACTIONS:
        return _SIMPLE_ACTIONS[name]
    if name in _DATA_ACTIONS:
        return _DATA_ACTIONS[name] | _errno_ret(errno_ret, what)
    if name == "SCMP_ACT_NOTIFY":
        raise InvalidArgument(
            f"seccomp: SCMP_ACT_NOTIFY needs listenerPath, not supported ({what})")
    raise InvalidArgument(f"seccomp: unknown action {name!r} ({what})")


def _arch_token(lib: _Lib, name: str) -> int:
    if not name.startswith("SCMP_ARCH_"):
        raise InvalidArgument(f"seccomp: unknown architecture {name!r}")
    token: int = lib.arch_resolve_name(name[len("SCMP_ARCH_"):].lower().encode())
    if token == 0:
        raise InvalidArgument(f"seccomp: unknown architecture {name!r}")
    return token


def _condition(arg: SeccompArg, what: str) -> _ArgCmp:
    op = _OPS.get(arg.op)
    if op is None:
        raise InvalidArgument(f"seccomp: unknown arg op {arg.op!r} ({what})")
    if not 0 <= arg.index < _MAX_ARGS:
        raise InvalidArgument(f"seccomp: arg index {arg.index} out of range 0..5 ({what})")
    for value in (arg.value, arg.value_two):
        if not 0 <= value <= _U64_MAX:
            raise InvalidArgument(f"seccomp: arg value {value} is not a 64-bit unsigned ({what})")
    return _ArgCmp(arg.index, op, arg.value, arg.value_two)


def _check(rc: int, what: str) -> None:
    if rc < 0:
        err = -rc
        if err == errno.EOPNOTSUPP:
            raise Unavailable(f"seccomp: {what}: not supported by this kernel or libseccomp")
        raise InvalidArgument(f"seccomp: {what}: {os.strerror(err)}")


def _add_rules(lib: _Lib, ctx: int, call: SeccompSyscall, default: int) -> None:
    what = f"syscalls {','.join(call.names)}" if call.names else "syscall rule"
    action = _action(call.action, call.errno_ret, what)
    conditions = [_condition(a, what) for a in call.args or ()]
    if not call.names:
        raise InvalidArgument(f"seccomp: a syscall rule with action {call.action} names no syscall")
    if any(not name for name in call.names):
        raise InvalidArgument(f"seccomp: empty syscall name ({what})")
    if action == default:
        return  # libseccomp refuses a rule that repeats the default action

    # libseccomp refuses two conditions on one arg in a rule: like runc, fall
    # back to one rule per condition (OR instead of AND) when an index repeats.
    indexes = [c.arg for c in conditions]
    unique = len(set(indexes)) == len(indexes)
    groups = [conditions] if unique else [[c] for c in conditions]

    for name in call.names:
        nr: int = lib.syscall_resolve_name(name.encode())
        if nr == _NR_SCMP_ERROR:
            continue  # unknown to this libseccomp: a syscall of a newer kernel
        for group in groups:
            array = (_ArgCmp * len(group))(*group)
            _check(lib.rule_add_array(ctx, action, nr, len(group), array),
                   f"add rule for syscall {name!r}")


def compile_filter(spec: Seccomp) -> SeccompFilter:
    """Validate ``spec`` and build its filter; nothing is loaded yet."""
    default = _action(spec.default_action, spec.default_errno_ret, "defaultAction")
    for flag in spec.flags or ():
        if flag not in _FLAGS:
            raise InvalidArgument(f"seccomp: unknown flag {flag!r}")
    # Validate every action up front, before touching libseccomp.
    for call in spec.syscalls or ():
        _action(call.action, call.errno_ret, f"syscalls {','.join(call.names)}")

    lib = _lib()
    arches = [_arch_token(lib, a) for a in spec.architectures or ()]
    ctx = lib.init(default)
    if not ctx:
        raise InvalidArgument(
            f"seccomp: libseccomp refused default action {spec.default_action}")
    filt = SeccompFilter(lib, ctx)
    try:
        _check(lib.attr_set(ctx, _FLTATR_CTL_NNP, 0), "disable no_new_privs")
        # Have seccomp_load return the kernel's errno, not -ECANCELED.
        _check(lib.attr_set(ctx, _FLTATR_API_SYSRAWRC, 1), "set SYSRAWRC")
        for flag in spec.flags or ():
            attr = _FLAGS[flag]
            if attr is not None:
                _check(lib.attr_set(ctx, attr, 1), f"flag {flag}")
        for name, token in zip(spec.architectures or (), arches, strict=True):
            rc = lib.arch_add(ctx, token)
            if rc != -errno.EEXIST:
                _check(rc, f"add architecture {name}")
        for call in spec.syscalls or ():
            _add_rules(lib, ctx, call, default)
    except BaseException:
        filt.release()
        raise
    return filt


def load(filter: SeccompFilter) -> None:
    """Install the filter on the calling thread (all threads with TSYNC)."""
    rc: int = filter._lib.load(filter.ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


class Program:
    """A filter as the kernel takes it: BPF code and the seccomp(2) flags.

    Plain bytes and an int: it crosses fork() as is, and loading it needs
    neither libseccomp nor any import."""

    __slots__ = ("code", "flags")

    def __init__(self, code: bytes, flags: int) -> None:
        if not code or len(code) % 8 or len(code) // 8 > _BPF_MAXINSNS:
            raise InvalidArgument(f"seccomp: not a BPF program ({len(code)} bytes)")
        self.code = code
        self.flags = flags

    def __repr__(self) -> str:
        return f"Program({len(self.code) // 8} instructions, flags={self.flags:#x})"


def program_for(spec: Seccomp, cache_dir: str | None = None) -> Program:
    """Compile ``spec`` to BPF (validating it as :func:`compile_filter` does).

    With ``cache_dir``, a program compiled before for the same profile, by
    the same libseccomp on the same kernel, is read from there instead, and
    a new one is stored there. The directory must be writable only by us
    (the runtime's root): a program read from it is loaded as is."""
    flags = 0
    for flag in spec.flags or ():
        if flag not in _FLAGS:
            raise InvalidArgument(f"seccomp: unknown flag {flag!r}")
        flags |= _KERNEL_FLAGS.get(flag, 0)
    path = None
    if cache_dir is not None:
        path = os.path.join(cache_dir, _cache_key(spec) + ".bpf")
        code = _read_cached(path)
        if code is not None:
            return Program(code, flags)
    with compile_filter(spec) as filt:
        program = Program(filt.export_bpf(), flags)
    if path is not None:
        _store(path, program.code)
    return program


def _cache_key(spec: Seccomp) -> str:
    try:
        # builtin; hashlib imports OpenSSL (~3.5 ms)
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:  # Python 3.12+
        from hashlib import sha256
    uname = os.uname()
    try:
        st = os.stat(__file__)  # this module: how a spec becomes libseccomp calls
        code_id = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        code_id = ""
    text = "\n".join((repr(spec), _lib().version, uname.machine, uname.release, code_id))
    return str(sha256(text.encode()).hexdigest())


def _read_cached(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        code = os.read(fd, _BPF_MAXINSNS * 8 + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not code or len(code) % 8 or len(code) > _BPF_MAXINSNS * 8:
        return None  # not something we wrote: compile again (and replace it)
    return code


def _store(path: str, code: bytes) -> None:
    """Keep a compiled program; a cache that cannot be written is only slower."""
    try:
        try:
            os.mkdir(os.path.dirname(path), 0o700)
        except FileExistsError:
            pass
        atomic_write(path, code, 0o600)
    except OSError:
        pass


def load_program(program: Program) -> None:
    """Install ``program`` on the calling thread (all threads with TSYNC), as
    libseccomp's seccomp_load does with the program it generates."""
    fprog = _Fprog(len(program.code) // 8, program.code)
    try:
        rc = libc.syscall(_SYS_SECCOMP, ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
                          ctypes.c_uint(program.flags), ctypes.byref(fprog), what="seccomp")
    except OSError as exc:
        if exc.errno != errno.ENOSYS or program.flags:
            raise
        libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
        return
    if rc > 0:  # TSYNC: the id of a thread that could not be synchronized
        raise OSError(errno.ESRCH, f"seccomp: thread {rc} could not take the filter")
