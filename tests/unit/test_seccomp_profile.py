"""Docker-format seccomp profile → OCI Seccomp: include/exclude by caps, arch, kernel."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from isobox.errors import InvalidArgument
from isobox.oci.runtime_spec import Seccomp, SeccompArg
from isobox.oci.seccomp_profile import docker_arch, docker_default_profile, to_oci

# Docker's default capability set (moby oci/caps/defaults.go).
DOCKER_DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]


def _unconditional(spec: Seccomp, action: str = "SCMP_ACT_ALLOW") -> set[str]:
    """Names with an argument-free rule of ``action``."""
    return {n for c in spec.syscalls or () if c.action == action and not c.args for n in c.names}


def _rules_for(spec: Seccomp, name: str) -> list[Any]:
    return [c for c in spec.syscalls or () if name in c.names]


def test_packaged_profile_is_dockers() -> None:
    profile = docker_default_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["defaultErrnoRet"] == 1
    allowed = {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
               for n in r["names"]}
    assert len(allowed) > 300
    assert {"read", "write", "openat", "execve", "mount", "unshare"} <= allowed
    assert "add_key" not in allowed and "keyctl" not in allowed
    # A fresh copy each call: callers may edit theirs.
    profile["syscalls"].clear()
    assert docker_default_profile()["syscalls"]


def test_default_caps_exclude_sys_admin_syscalls() -> None:
    spec = to_oci(docker_default_profile(), capabilities=DOCKER_DEFAULT_CAPS)
    assert spec.default_action == "SCMP_ACT_ERRNO"
    assert spec.default_errno_ret == 1
    allowed = _unconditional(spec)
    assert {"read", "mkdir", "chroot"} <= allowed  # chroot: CAP_SYS_CHROOT is a default cap
    for name in ("mount", "unshare", "setns", "umount2", "bpf", "reboot", "kcmp"):
        assert name not in allowed
    # clone only with namespace flags masked out; clone3 answers ENOSYS so libc falls back.
    (clone,) = _rules_for(spec, "clone")
    assert clone.args == [SeccompArg(index=0, value=2114060288, op="SCMP_CMP_MASKED_EQ")]
    (clone3,) = _rules_for(spec, "clone3")
    assert (clone3.action, clone3.errno_ret) == ("SCMP_ACT_ERRNO", 38)


def test_sys_admin_allows_mount_and_unshare() -> None:
    spec = to_oci(docker_default_profile(), capabilities=[*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    allowed = _unconditional(spec)
    assert {"mount", "unshare", "setns", "clone", "clone3"} <= allowed
    # The excludes on CAP_SYS_ADMIN drop the restricted clone and the clone3 ENOSYS rule.
    assert all(not c.args for c in _rules_for(spec, "clone"))
    assert all(c.action == "SCMP_ACT_ALLOW" for c in _rules_for(spec, "clone3"))


def test_caps_gate_other_rules() -> None:
    base = _unconditional(to_oci(docker_default_profile(), capabilities=[]))
    assert "chroot" not in base and "ptrace" in base  # ptrace: minKernel 4.8, kernel unknown
    with_ptrace = _unconditional(
        to_oci(docker_default_profile(), capabilities=["CAP_SYS_PTRACE"]))
    assert {"kcmp", "pidfd_getfd", "process_madvise"} <= with_ptrace - base


def test_min_kernel() -> None:
    old = _unconditional(to_oci(docker_default_profile(), capabilities=[], kernel=(4, 4)))
    new = _unconditional(to_oci(docker_default_profile(), capabilities=[], kernel=(6, 1)))
    assert "ptrace" not in old and "process_vm_readv" not in old
    assert "ptrace" in new
    assert _unconditional(to_oci(docker_default_profile(), capabilities=[], kernel=(4, 8))) == new


def test_arch_filtering_x86_64() -> None:
    spec = to_oci(docker_default_profile(), capabilities=[], arch="x86_64")
    assert spec.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _unconditional(spec)
    assert {"arch_prctl", "modify_ldt"} <= allowed
    assert not {"set_tls", "cacheflush", "riscv_flush_icache", "s390_runtime_instr"} & allowed


def test_arch_filtering_aarch64() -> None:
    spec = to_oci(docker_default_profile(), capabilities=[], arch="aarch64")
    assert spec.architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    allowed = _unconditional(spec)
    assert {"set_tls", "cacheflush", "arm_fadvise64_64"} <= allowed
    assert not {"arch_prctl", "modify_ldt"} & allowed
    assert docker_arch("aarch64") == "arm64" and docker_arch("arm64") == "arm64"


def test_arch_filtering_s390x_clone_ordering() -> None:
    spec = to_oci(docker_default_profile(), capabilities=[], arch="s390x")
    assert spec.architectures == ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]
    (clone,) = _rules_for(spec, "clone")
    assert clone.args is not None and clone.args[0].index == 1


def test_riscv_has_no_sub_architectures() -> None:
    spec = to_oci(docker_default_profile(), capabilities=[], arch="riscv64")
    assert spec.architectures == ["SCMP_ARCH_RISCV64"]


def test_unknown_arch_gets_no_architectures() -> None:
    spec = to_oci(docker_default_profile(), capabilities=[], arch="sparc64")
    assert spec.architectures is None


def test_explicit_architectures_and_flags_pass_through() -> None:
    spec = to_oci({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                      "args": [{"index": 1, "value": 7, "valueTwo": 3,
                                "op": "SCMP_CMP_MASKED_EQ"}]}],
    }, capabilities=[])
    assert spec.architectures == ["SCMP_ARCH_X86_64"]
    assert spec.flags == ["SECCOMP_FILTER_FLAG_LOG"]
    assert spec.syscalls is not None
    (call,) = spec.syscalls
    assert call.names == ["mkdir"] and call.errno_ret == 38
    assert call.args == [SeccompArg(index=1, value=7, value_two=3, op="SCMP_CMP_MASKED_EQ")]


def test_exclude_arch() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["a"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
        {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["arm64"]}},
    ]}
    assert _unconditional(to_oci(profile, capabilities=[], arch="x86_64")) == {"b"}
    assert _unconditional(to_oci(profile, capabilities=[], arch="aarch64")) == {"a"}


def test_includes_need_every_cap() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["x"], "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["CAP_A", "CAP_B"]}},
    ]}
    assert _unconditional(to_oci(profile, capabilities=["CAP_A"])) == set()
    assert _unconditional(to_oci(profile, capabilities=["CAP_A", "CAP_B"])) == {"x"}


def test_input_not_modified() -> None:
    profile = docker_default_profile()
    before = copy.deepcopy(profile)
    to_oci(profile, capabilities=["CAP_SYS_ADMIN"])
    assert profile == before


@pytest.mark.parametrize(("profile", "message"), [
    ({"syscalls": []}, "defaultAction"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "archMap"),
    ({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]}, "'name' and 'names'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
     "names no syscall"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["a"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "four"}}]},
     "minKernel"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read", "action": 1}]},
     "syscalls[0]"),
])
def test_invalid_profiles(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        to_oci(profile, capabilities=[])


def test_default_oci_is_to_oci_of_the_default_profile() -> None:
    """The create path's shortcut gives exactly what the typed conversion
    gives, for every arch, kernel and capability that the profile tests."""
    import itertools

    from isobox.oci.seccomp_profile import default_oci
    from isobox.oci.struct import to_builtins

    profile = docker_default_profile()
    caps = sorted({c for call in profile["syscalls"] for key in ("includes", "excludes")
                   for c in ((call.get(key) or {}).get("caps") or ())})
    assert "CAP_SYS_ADMIN" in caps
    cap_sets = [list(c) for n in range(3) for c in itertools.combinations(caps, n)]
    cap_sets.append(caps)
    for arch in ("x86_64", "aarch64", "s390x", "ppc64le", "riscv64", "armv7l", "sparc"):
        for kernel in (None, (3, 10), (4, 8), (5, 4), (6, 1)):
            for chosen in cap_sets:
                want = to_builtins(to_oci(docker_default_profile(), capabilities=chosen,
                                          arch=arch, kernel=kernel))
                assert default_oci(chosen, arch, kernel) == want, (arch, kernel, chosen)
