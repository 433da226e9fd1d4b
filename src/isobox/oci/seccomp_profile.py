"""Docker-format seccomp profiles, turned into the OCI ``linux.seccomp`` section.

A Docker profile (``profiles/seccomp/default.json`` in moby) is a template:
each syscall rule may carry ``includes``/``excludes`` conditions on the
container's capabilities, the architecture and the kernel version, and
``archMap`` lists the sub-architectures of each main one. :func:`to_oci`
evaluates those conditions the way Docker's ``setupSeccomp`` does and returns
the plain OCI struct that a runtime compiles.

Pure: no I/O beyond reading the packaged default profile.
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from isobox.errors import InvalidArgument
from isobox.oci.runtime_spec import Seccomp, SeccompArg, SeccompSyscall
from isobox.oci.struct import Struct, ValidationError, convert

__all__ = ["default_oci", "docker_arch", "docker_default_profile", "to_oci"]


class _Base(Struct):
    pass


class _Filter(_Base):
    caps: list[str] | None = None
    arches: list[str] | None = None
    min_kernel: str | None = None


class _Syscall(_Base):
    action: str
    name: str | None = None  # deprecated single-name form, still accepted by Docker
    names: list[str] | None = None
    errno_ret: int | None = None
    args: list[SeccompArg] | None = None
    comment: str | None = None
    includes: _Filter | None = None
    excludes: _Filter | None = None


class _Architecture(_Base):
    architecture: str
    sub_architectures: list[str] | None = None


class _Profile(_Base):
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] | None = None
    arch_map: list[_Architecture] | None = None
    flags: list[str] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[_Syscall] | None = None


# Docker names architectures by Go's GOARCH spelling ("amd64", "arm64") in
# includes/excludes; callers more often hold uname's ("x86_64", "aarch64").
_TO_DOCKER_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i686": "x86",
    "386": "x86",
    "x86": "x86",
    "x32": "x32",
    "aarch64": "arm64",
    "arm64": "arm64",
    "arm": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "s390": "s390",
    "riscv64": "riscv64",
    "mips": "mips",
    "mipsle": "mipsle",
    "mipsel": "mipsle",
    "mips64": "mips64",
    "mips64le": "mipsel64",
    "mipsel64": "mipsel64",
    "mips64n32": "mips64n32",
    "mipsel64n32": "mips3l64n32",
    "mips3l64n32": "mips3l64n32",
}

# Docker's nativeToSeccomp: its arch name → the OCI/libseccomp architecture.
_DOCKER_TO_SCMP = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "x32": "SCMP_ARCH_X32",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsle": "SCMP_ARCH_MIPSEL",
    "mips": "SCMP_ARCH_MIPS",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}


def docker_arch(arch: str) -> str:
    """Docker's spelling of ``arch`` (``x86_64`` → ``amd64``); unknown names pass through."""
    return _TO_DOCKER_ARCH.get(arch, arch)


_DEFAULT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                             "seccomp_default.json")


def _default_bytes() -> bytes:
    try:
        with open(_DEFAULT_FILE, "rb") as f:  # a plain install: no importlib.resources (~5 ms)
            return f.read()
    except OSError:
        from importlib import resources  # a zip or another loader

        return resources.files("isobox.oci").joinpath("data", "seccomp_default.json").read_bytes()


def docker_default_profile() -> dict[str, Any]:
    """Docker's default profile, as shipped in ``isobox/oci/data`` (a fresh copy each call)."""
    profile: dict[str, Any] = json.loads(_default_bytes())
    return profile


def default_oci(capabilities: Sequence[str], arch: str = "x86_64",
                kernel: tuple[int, int] | None = None) -> dict[str, Any]:
    """``to_oci(docker_default_profile(), ...)`` as plain JSON data (what
    ``to_builtins`` makes of it), without the typed conversion: the packaged
    profile is trusted, and every container without ``--security-opt
    seccomp`` needs it (a few ms less on each create)."""
    prof = docker_default_profile()
    native = docker_arch(arch)
    caps = frozenset(capabilities)
    out: dict[str, Any] = {"defaultAction": prof["defaultAction"]}
    if prof.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = prof["defaultErrnoRet"]
    scmp_arch = _DOCKER_TO_SCMP.get(native)
    architectures: list[str] = []
    for entry in prof.get("archMap") or ():
        if scmp_arch is not None and entry["architecture"] == scmp_arch:
            architectures.append(entry["architecture"])
            architectures.extend(entry.get("subArchitectures") or ())
    if architectures:
        out["architectures"] = architectures
    syscalls = []
    for call in prof["syscalls"]:
        if not _wanted_raw(call, native, caps, kernel):
            continue
        rule: dict[str, Any] = {"names": call["names"], "action": call["action"]}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [{k: v for k, v in a.items() if v is not None}
                            for a in call["args"]]
        syscalls.append(rule)
    out["syscalls"] = syscalls
    return out


def _wanted_raw(call: Mapping[str, Any], arch: str, caps: frozenset[str],
                kernel: tuple[int, int] | None) -> bool:
    """:func:`_wanted` on the profile's JSON."""
    ex = call.get("excludes")
    if ex:
        if ex.get("arches") and arch in ex["arches"]:
            return False
        if ex.get("caps") and any(c in caps for c in ex["caps"]):
            return False
        if ex.get("minKernel") and _kernel_at_least(kernel, ex["minKernel"]):
            return False
    inc = call.get("includes")
    if inc:
        if inc.get("arches") and arch not in inc["arches"]:
            return False
        if inc.get("caps") and not all(c in caps for c in inc["caps"]):
            return False
        if inc.get("minKernel") and not _kernel_at_least(kernel, inc["minKernel"]):
            return False
    return True


def _parse_kernel(text: str) -> tuple[int, int]:
    major, sep, minor = text.partition(".")
    try:
        if not sep:
            raise ValueError(text)
        # Docker's KernelVersion is "major.minor"; tolerate a patch level.
        return int(major), int(minor.partition(".")[0])
    except ValueError:
        raise InvalidArgument(
            f"seccomp profile: invalid minKernel {text!r}, want \"major.minor\"") from None


def _kernel_at_least(kernel: tuple[int, int] | None, minimum: str) -> bool:
    wanted = _parse_kernel(minimum)
    # Unknown kernel: assume a current one, which satisfies every minKernel.
    return kernel is None or kernel[:2] >= wanted


def _wanted(call: _Syscall, arch: str, caps: frozenset[str],
            kernel: tuple[int, int] | None) -> bool:
    """Docker's include/exclude evaluation, in Docker's order."""
    ex = call.excludes
    if ex is not None:
        if ex.arches and arch in ex.arches:
            return False
        if ex.caps and any(c in caps for c in ex.caps):
            return False
        if ex.min_kernel and _kernel_at_least(kernel, ex.min_kernel):
            return False
    inc = call.includes
    if inc is not None:
        if inc.arches and arch not in inc.arches:
            return False
        if inc.caps and not all(c in caps for c in inc.caps):
            return False
        if inc.min_kernel and not _kernel_at_least(kernel, inc.min_kernel):
            return False
    return True


def to_oci(profile: Mapping[str, Any], *, capabilities: Sequence[str], arch: str = "x86_64",
           kernel: tuple[int, int] | None = None) -> Seccomp:
    """Turn a Docker-format profile into the OCI ``Seccomp`` for one container.

    ``capabilities`` are the container's capability names (``CAP_SYS_ADMIN``;
    Docker uses the bounding set); ``arch`` is the host architecture in
    uname's or Go's spelling; ``kernel`` is the host's ``(major, minor)``,
    or None to treat every ``minKernel`` as satisfied.
    """
    try:
        prof = convert(_Profile, profile)
    except ValidationError as exc:
        raise InvalidArgument(f"invalid seccomp profile: {exc}") from None
    if prof.architectures and prof.arch_map:
        raise InvalidArgument(
            "seccomp profile: both 'architectures' and 'archMap' are given, use one")

    native = docker_arch(arch)
    caps = frozenset(capabilities)

    architectures: list[str] | None = None
    if prof.architectures:
        architectures = list(prof.architectures)
    elif prof.arch_map:
        scmp_arch = _DOCKER_TO_SCMP.get(native)
        architectures = []
        for entry in prof.arch_map:
            if scmp_arch is not None and entry.architecture == scmp_arch:
                architectures.append(entry.architecture)
                architectures.extend(entry.sub_architectures or ())
        architectures = architectures or None

    syscalls: list[SeccompSyscall] = []
    for i, call in enumerate(prof.syscalls or ()):
        if call.name and call.names:
            raise InvalidArgument(
                f"seccomp profile: syscalls[{i}] has both 'name' and 'names', use one")
        names = [call.name] if call.name else list(call.names or ())
        if not names:
            raise InvalidArgument(f"seccomp profile: syscalls[{i}] names no syscall")
        if not _wanted(call, native, caps, kernel):
            continue
        syscalls.append(SeccompSyscall(
            names=names,
            action=call.action,
            errno_ret=call.errno_ret,
            args=[SeccompArg(index=a.index, value=a.value, op=a.op, value_two=a.value_two)
                  for a in call.args] if call.args else None,
        ))

    return Seccomp(
        default_action=prof.default_action,
        default_errno_ret=prof.default_errno_ret,
        architectures=architectures,
        flags=list(prof.flags) if prof.flags else None,
        listener_path=prof.listener_path,
        listener_metadata=prof.listener_metadata,
        syscalls=syscalls,
    )
