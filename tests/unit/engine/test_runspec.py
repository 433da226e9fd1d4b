"""build_spec: Docker's run options → an OCI config.json, checked field by field.

Every spec built here also goes through the runtime's own decoder and
validator (decode_spec, validate_spec), as the runtime would read it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from isobox.engine import runspec
from isobox.engine.api_types import (
    ContainerConfig,
    CreateRequest,
    DeviceMapping,
    HealthConfig,
    HostConfig,
    Mount,
    TmpfsOptions,
    Ulimit,
    WeightDevice,
)
from isobox.engine.userdb import ResolvedUser
from isobox.errors import InvalidArgument, Unavailable
from isobox.linux import capabilities
from isobox.oci import image_spec
from isobox.oci.runtime_spec import decode_spec
from isobox.runtime.validate import validate_spec

LAST_CAP = len(capabilities.NAMES) - 1
DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
CID = "0123456789ab" + "c" * 52


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    root = tmp_path / "bundle" / "rootfs"
    root.mkdir(parents=True)
    return str(root)


def image(**config: Any) -> image_spec.ImageConfig:
    return image_spec.ImageConfig(architecture="amd64", os="linux",
                                  rootfs=image_spec.RootFS(),
                                  config=image_spec.ContainerConfig(**config))


def req(cmd: list[str] | None = None, host: HostConfig | None = None,
        **config: Any) -> CreateRequest:
    return CreateRequest(image="busybox", cmd=["sh"] if cmd is None else cmd,
                         host_config=host or HostConfig(), **config)


def build(rootfs: str, create: CreateRequest, img: image_spec.ImageConfig | None = None,
          **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "container_id": CID, "rootfs": rootfs, "hostname": "0123456789ab",
        "user": ResolvedUser(), "mounts": [], "resolv_conf": None, "hosts_file": None,
        "hostname_file": None, "cgroups_path": f"/isobox/{CID}", "kernel": (6, 1),
    }
    args.update(kw)
    spec = runspec.build_spec(create, img, **args)
    decoded = decode_spec(json.dumps(spec).encode())
    validate_spec(decoded, str(Path(rootfs).parent), LAST_CAP)
    return spec


def mount_at(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, (dest, spec["mounts"])
    return found[0]


def allowed_syscalls(spec: dict[str, Any]) -> set[str]:
    return {n for rule in spec["linux"]["seccomp"]["syscalls"]
            if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
            for n in rule["names"]}


# --- defaults -----------------------------------------------------------------------

def test_defaults_are_dockers(rootfs: str) -> None:
    spec = build(rootfs, req(), resolv_conf="/c/resolv.conf", hosts_file="/c/hosts",
                 hostname_file="/c/hostname")
    proc = spec["process"]
    assert proc["terminal"] is False
    assert proc["args"] == ["sh"]
    assert proc["cwd"] == "/"
    assert proc["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert proc["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           "HOSTNAME=0123456789ab"]
    assert proc["capabilities"] == {k: DOCKER_CAPS for k in ("bounding", "effective",
                                                             "permitted")}
    assert "rlimits" not in proc and "noNewPrivileges" not in proc
    assert proc["oomScoreAdj"] == 0
    assert spec["root"] == {"path": rootfs, "readonly": False}
    assert spec["hostname"] == "0123456789ab"
    assert "domainname" not in spec
    assert spec["mounts"] == [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/c/resolv.conf",
         "options": ["rbind", "rprivate"]},
        {"destination": "/etc/hostname", "type": "bind", "source": "/c/hostname",
         "options": ["rbind", "rprivate"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/c/hosts",
         "options": ["rbind", "rprivate"]},
    ]
    linux = spec["linux"]
    assert linux["namespaces"] == [{"type": t} for t in ("mount", "network", "uts", "pid",
                                                         "ipc", "cgroup")]
    assert linux["cgroupsPath"] == f"/isobox/{CID}"
    assert linux["maskedPaths"] == [
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
        "/sys/firmware", "/sys/devices/virtual/powercap"]
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"]
    assert linux["resources"] == {"devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "access": "m"},
        {"allow": True, "type": "b", "access": "m"},
        *({"allow": True, "type": "c", "major": a, "minor": b, "access": "rwm"}
          for a, b in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2))),
        {"allow": True, "type": "c", "major": 136, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
    ]}
    assert "sysctl" not in linux
    assert linux["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert "SCMP_ARCH_X86_64" in linux["seccomp"]["architectures"]
    assert "devices" not in linux and "rootfsPropagation" not in linux
    assert spec["annotations"] == {runspec.ANNOTATION_ID: CID,
                                   runspec.ANNOTATION_IMAGE: "busybox",
                                   runspec.ANNOTATION_ISOLATION: "default"}


def test_cgroup_namespace_follows_the_cgroup_version(rootfs: str) -> None:
    kinds = [ns["type"] for ns in build(rootfs, req(), cgroup_version=1)["linux"]["namespaces"]]
    assert "cgroup" not in kinds
    spec = build(rootfs, req(host=HostConfig(cgroupns_mode="private")), cgroup_version=1)
    assert {"type": "cgroup"} in spec["linux"]["namespaces"]
    spec = build(rootfs, req(host=HostConfig(cgroupns_mode="host")), cgroup_version=2)
    assert {"type": "cgroup"} not in spec["linux"]["namespaces"]
    with pytest.raises(InvalidArgument, match="invalid cgroup namespace mode"):
        build(rootfs, req(host=HostConfig(cgroupns_mode="shared")))


# --- command and environment ----------------------------------------------------------

@pytest.mark.parametrize(("img", "entrypoint", "cmd", "args"), [
    ({"cmd": ["sh"]}, None, None, ["sh"]),
    ({"cmd": ["sh"]}, None, ["ls", "-l"], ["ls", "-l"]),
    ({"entrypoint": ["/init"], "cmd": ["--serve"]}, None, None, ["/init", "--serve"]),
    ({"entrypoint": ["/init"], "cmd": ["--serve"]}, None, ["--debug"], ["/init", "--debug"]),
    # --entrypoint resets the image's Cmd
    ({"entrypoint": ["/init"], "cmd": ["--serve"]}, ["/bin/sh"], None, ["/bin/sh"]),
    ({"entrypoint": ["/init"], "cmd": ["--serve"]}, ["/bin/sh"], ["-c", "id"],
     ["/bin/sh", "-c", "id"]),
    # --entrypoint "" clears the image's entrypoint and Cmd; a command is then needed
    ({"entrypoint": ["/init"], "cmd": ["--serve"]}, [""], ["echo", "hi"], ["echo", "hi"]),
    ({"entrypoint": ["/init"]}, None, None, ["/init"]),
])
def test_entrypoint_and_cmd_merge(rootfs: str, img: dict[str, Any],
                                  entrypoint: list[str] | None, cmd: list[str] | None,
                                  args: list[str]) -> None:
    create = CreateRequest(image="x", entrypoint=entrypoint, cmd=cmd)
    assert build(rootfs, create, image(**img))["process"]["args"] == args


@pytest.mark.parametrize(("img", "entrypoint", "cmd"), [
    ({}, None, None),
    ({"entrypoint": ["/init"], "cmd": ["--serve"]}, [""], None),
])
def test_no_command_is_an_error(rootfs: str, img: dict[str, Any],
                                entrypoint: list[str] | None, cmd: list[str] | None) -> None:
    with pytest.raises(InvalidArgument, match=r"^No command specified$"):
        build(rootfs, CreateRequest(image="x", entrypoint=entrypoint, cmd=cmd), image(**img))


def test_env_merging(rootfs: str) -> None:
    img = image(cmd=["sh"], env=["PATH=/opt/bin:/bin", "LANG=C", "KEEP=1", "DROP=x"])
    create = CreateRequest(image="x", tty=True, env=["LANG=en_US.UTF-8", "NEW=2", "DROP"])
    merged = runspec.merge_config(create, img)
    # Docker's merge: the request's entries first, then the image's others
    assert merged.env == ["LANG=en_US.UTF-8", "NEW=2", "DROP", "PATH=/opt/bin:/bin", "KEEP=1"]
    env = build(rootfs, create, img, hostname="web")["process"]["env"]
    assert env == ["PATH=/opt/bin:/bin", "HOSTNAME=web", "TERM=xterm", "LANG=en_US.UTF-8",
                   "NEW=2", "KEEP=1"]


def test_env_replace_keeps_order_and_last_wins() -> None:
    assert runspec.replace_or_append_env(["A=1", "B=2", "C=3"], ["B=x", "D=4", "A", "D=5"]) \
        == ["B=x", "C=3", "D=5"]


def test_terminal_and_console_size(rootfs: str) -> None:
    spec = build(rootfs, req(tty=True, host=HostConfig(console_size=[40, 120])))
    assert spec["process"]["terminal"] is True
    assert spec["process"]["consoleSize"] == {"height": 40, "width": 120}


def test_workdir(rootfs: str) -> None:
    assert build(rootfs, req(), image(working_dir="/srv/"))["process"]["cwd"] == "/srv"
    assert build(rootfs, req(working_dir="/app"), image(working_dir="/srv"))["process"][
        "cwd"] == "/app"
    with pytest.raises(InvalidArgument, match="it needs to be an absolute path"):
        build(rootfs, req(working_dir="app"))


def test_merge_config_for_the_engine() -> None:
    img = image(cmd=["sh"], user="app", exposed_ports={"80/tcp": {}},
                volumes={"/data": {}}, labels={"a": "img", "b": "img"}, stop_signal="SIGQUIT",
                healthcheck=image_spec.HealthConfig(test=["CMD", "true"], interval=5, retries=3))
    create = CreateRequest(image="x", exposed_ports={"443/tcp": {}}, volumes={"/logs": {}},
                           labels={"b": "mine"}, healthcheck=HealthConfig(interval=9))
    merged = runspec.merge_config(create, img)
    assert isinstance(merged, ContainerConfig)
    assert merged.user == "app"
    assert merged.exposed_ports == {"443/tcp": {}, "80/tcp": {}}
    assert merged.volumes == {"/logs": {}, "/data": {}}
    assert merged.labels == {"b": "mine", "a": "img"}
    assert merged.stop_signal == "SIGQUIT"
    assert merged.healthcheck == HealthConfig(test=["CMD", "true"], interval=9, retries=3)
    assert runspec.merge_config(CreateRequest(image="x", user="0:0", stop_signal="9"),
                                img).user == "0:0"


def test_user_and_groups(rootfs: str) -> None:
    user = ResolvedUser(uid=1000, gid=1000, additional_gids=(1000, 10, 4242), home="/home/a")
    spec = build(rootfs, req(), user=user)
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000,
                                       "additionalGids": [1000, 10, 4242]}


# --- capabilities and security ---------------------------------------------------------

def caps_of(rootfs: str, host: HostConfig, **kw: Any) -> list[str]:
    result: list[str] = build(rootfs, req(host=host), **kw)["process"]["capabilities"][
        "bounding"]
    return result


def test_cap_add_and_drop(rootfs: str) -> None:
    caps = caps_of(rootfs, HostConfig(cap_add=["net_admin", "CAP_SYS_TIME"],
                                      cap_drop=["chown", "Cap_Kill"]))
    assert caps == [c for c in DOCKER_CAPS if c not in ("CAP_CHOWN", "CAP_KILL")] + [
        "CAP_NET_ADMIN", "CAP_SYS_TIME"]
    assert caps_of(rootfs, HostConfig(cap_drop=["ALL"])) == []
    assert caps_of(rootfs, HostConfig(cap_drop=["all"], cap_add=["NET_BIND_SERVICE"])) == [
        "CAP_NET_BIND_SERVICE"]
    host_caps = ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"]
    assert caps_of(rootfs, HostConfig(cap_add=["ALL"], cap_drop=["kill"]),
                   host_caps=host_caps) == ["CAP_CHOWN", "CAP_SYS_ADMIN"]
    assert caps_of(rootfs, HostConfig(cap_add=["ALL"])) == list(capabilities.NAMES)
    # adding one already there does not repeat it
    assert caps_of(rootfs, HostConfig(cap_add=["CHOWN"])) == DOCKER_CAPS


def test_unknown_capability(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match='unknown capability: "CAP_BOGUS"'):
        build(rootfs, req(host=HostConfig(cap_add=["bogus"])))
    with pytest.raises(InvalidArgument, match="unknown capability"):
        build(rootfs, req(host=HostConfig(cap_drop=["CAP_NOPE"])))


def test_privileged(rootfs: str) -> None:
    host_caps = list(capabilities.NAMES[:38])
    create = req(host=HostConfig(privileged=True, cap_drop=["ALL"]))
    devices = [{"path_in_container": "/dev/sda", "type": "b", "major": 8, "minor": 0,
                "permissions": "rwm", "file_mode": 0o660, "uid": 0, "gid": 6}]
    spec = build(rootfs, create, host_caps=host_caps, devices=devices)
    assert runspec.wants_host_devices(create)
    assert not runspec.wants_host_devices(req())
    assert spec["process"]["capabilities"]["effective"] == host_caps
    linux = spec["linux"]
    assert "seccomp" not in linux
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert mount_at(spec, "/sys")["options"] == ["nosuid", "noexec", "nodev"]
    assert mount_at(spec, "/sys/fs/cgroup")["options"] == ["nosuid", "noexec", "nodev"]
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert linux["devices"] == [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0,
                                 "fileMode": 0o660, "uid": 0, "gid": 6}]


def test_seccomp_default_profile_follows_capabilities(rootfs: str) -> None:
    allowed = allowed_syscalls(build(rootfs, req()))
    assert {"read", "write", "execve", "openat"} <= allowed
    for blocked in ("unshare", "mount", "setns", "bpf", "reboot", "kcmp", "add_key"):
        assert blocked not in allowed
    admin = allowed_syscalls(build(rootfs, req(host=HostConfig(cap_add=["SYS_ADMIN"]))))
    assert {"unshare", "mount", "setns", "bpf"} <= admin
    assert "reboot" not in admin
    boot = allowed_syscalls(build(rootfs, req(host=HostConfig(cap_add=["SYS_BOOT"]))))
    assert "reboot" in boot


def test_seccomp_options(rootfs: str) -> None:
    assert "seccomp" not in build(rootfs, req(host=HostConfig(
        security_opt=["seccomp=unconfined"])))["linux"]
    assert "seccomp" not in build(rootfs, req(host=HostConfig(
        security_opt=["seccomp:unconfined"])))["linux"]
    builtin = build(rootfs, req(host=HostConfig(security_opt=["seccomp=builtin"])))
    assert builtin["linux"]["seccomp"] == build(rootfs, req())["linux"]["seccomp"]
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
               "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}
    spec = build(rootfs, req(host=HostConfig(
        security_opt=["seccomp=" + json.dumps(profile)])))
    assert spec["linux"]["seccomp"] == {
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(InvalidArgument, match="decoding seccomp profile failed"):
        build(rootfs, req(host=HostConfig(security_opt=["seccomp={not json"])))


@pytest.mark.parametrize(("opts", "nnp"), [
    (["no-new-privileges"], True), (["no-new-privileges:true"], True),
    (["no-new-privileges=true"], True), (["no-new-privileges=false"], False),
    (["no-new-privileges", "no-new-privileges=0"], False),
    (["label=disable", "apparmor=unconfined", "label:type:svirt_t"], False),
])
def test_no_new_privileges(rootfs: str, opts: list[str], nnp: bool) -> None:
    proc = build(rootfs, req(host=HostConfig(security_opt=opts)))["process"]
    assert proc.get("noNewPrivileges", False) is nnp


@pytest.mark.parametrize(("opt", "message"), [
    ("bogus", 'invalid --security-opt 1: "bogus"'),
    ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("systempaths=confined", 'invalid --security-opt 2'),
])
def test_unknown_security_opt(rootfs: str, opt: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(rootfs, req(host=HostConfig(security_opt=[opt])))


def test_masked_paths_overrides(rootfs: str) -> None:
    spec = build(rootfs, req(host=HostConfig(security_opt=["systempaths=unconfined"])))
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    spec = build(rootfs, req(host=HostConfig(masked_paths=["/proc/kcore"], readonly_paths=[])))
    assert spec["linux"]["maskedPaths"] == ["/proc/kcore"]
    assert "readonlyPaths" not in spec["linux"]


# --- resources ------------------------------------------------------------------------------

MiB = 1024 * 1024


@pytest.mark.parametrize(("host", "memory"), [
    (HostConfig(memory=64 * MiB), {"limit": 64 * MiB, "swap": 128 * MiB}),
    (HostConfig(memory=64 * MiB, memory_swap=-1), {"limit": 64 * MiB, "swap": -1}),
    (HostConfig(memory=64 * MiB, memory_swap=100 * MiB), {"limit": 64 * MiB,
                                                          "swap": 100 * MiB}),
    (HostConfig(memory=64 * MiB, memory_swap=64 * MiB), {"limit": 64 * MiB, "swap": 64 * MiB}),
    (HostConfig(memory_swap=-1), {"swap": -1}),
    (HostConfig(memory=64 * MiB, memory_reservation=32 * MiB),
     {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 128 * MiB}),
    (HostConfig(memory_swappiness=-1), None),
])
def test_memory(rootfs: str, host: HostConfig, memory: dict[str, int] | None) -> None:
    assert build(rootfs, req(host=host))["linux"]["resources"].get("memory") == memory


def test_memory_cgroup_v1_only_knobs(rootfs: str) -> None:
    host = HostConfig(memory=64 * MiB, memory_swappiness=10, oom_kill_disable=True)
    v1 = build(rootfs, req(host=host), cgroup_version=1)["linux"]["resources"]["memory"]
    assert v1 == {"limit": 64 * MiB, "swap": 128 * MiB, "swappiness": 10,
                  "disableOOMKiller": True}
    v2 = build(rootfs, req(host=host), cgroup_version=2)["linux"]["resources"]["memory"]
    assert v2 == {"limit": 64 * MiB, "swap": 128 * MiB}


@pytest.mark.parametrize(("host", "message"), [
    (HostConfig(memory=4 * MiB), "Minimum memory limit allowed is 6MB"),
    (HostConfig(memory_swap=100 * MiB), "You should always set the Memory limit"),
    (HostConfig(memory=64 * MiB, memory_swap=32 * MiB),
     "Minimum memoryswap limit should be larger than memory limit"),
    (HostConfig(memory=32 * MiB, memory_reservation=64 * MiB),
     "Minimum memory limit can not be less than memory reservation limit"),
    (HostConfig(memory_swappiness=101), "valid memory swappiness range is 0-100"),
    (HostConfig(nano_cpus=10**9, cpu_quota=50000), "Nano CPUs and CPU Quota"),
    (HostConfig(nano_cpus=10**9, cpu_period=50000), "Nano CPUs and CPU Period"),
    (HostConfig(cpu_period=100), "CPU cfs period can not be less than 1ms"),
    (HostConfig(cpu_quota=500), "CPU cfs quota can not be less than 1ms"),
    (HostConfig(blkio_weight=5), "Range of blkio weight is from 10 to 1000"),
    (HostConfig(oom_score_adj=1001), "range for oom score adj is"),
    (HostConfig(shm_size=-1), "SHM size can not be less than 0"),
    (HostConfig(isolation="container"), "invalid isolation"),
    (HostConfig(device_cgroup_rules=["c 1:3"]), "invalid device cgroup format 'c 1:3'"),
])
def test_resource_limits_docker_refuses(rootfs: str, host: HostConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build(rootfs, req(host=host))


def test_cpu(rootfs: str) -> None:
    res = build(rootfs, req(host=HostConfig(nano_cpus=1_500_000_000, cpu_shares=512,
                                            cpuset_cpus="0-1", cpuset_mems="0")))[
        "linux"]["resources"]
    assert res["cpu"] == {"quota": 150000, "period": 100000, "shares": 512, "cpus": "0-1",
                          "mems": "0"}
    res = build(rootfs, req(host=HostConfig(cpu_period=50000, cpu_quota=25000)))[
        "linux"]["resources"]
    assert res["cpu"] == {"period": 50000, "quota": 25000}


@pytest.mark.parametrize(("limit", "pids"), [(None, None), (0, None), (-1, None),
                                             (100, {"limit": 100})])
def test_pids_limit(rootfs: str, limit: int | None, pids: dict[str, int] | None) -> None:
    res = build(rootfs, req(host=HostConfig(pids_limit=limit)))["linux"]["resources"]
    assert res.get("pids") == pids


def test_block_io(rootfs: str) -> None:
    host = HostConfig(blkio_weight=300,
                      blkio_weight_device=[WeightDevice(path="/dev/sda", weight=200)])
    res = build(rootfs, req(host=host), device_numbers={"/dev/sda": (8, 0)})[
        "linux"]["resources"]
    assert res["blockIO"] == {"weight": 300,
                              "weightDevice": [{"major": 8, "minor": 0, "weight": 200}]}
    with pytest.raises(InvalidArgument, match="no device numbers"):
        build(rootfs, req(host=host))


def test_ulimits_become_rlimits(rootfs: str) -> None:
    host = HostConfig(ulimits=[Ulimit(name="nofile", soft=1024, hard=2048),
                               Ulimit(name="core", soft=-1, hard=-1),
                               Ulimit(name="nproc", soft=10, hard=-1)])
    assert build(rootfs, req(host=host))["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024},
        {"type": "RLIMIT_CORE", "hard": 2**64 - 1, "soft": 2**64 - 1},
        {"type": "RLIMIT_NPROC", "hard": 2**64 - 1, "soft": 10},
    ]
    with pytest.raises(InvalidArgument, match="invalid ulimit type: bogus"):
        build(rootfs, req(host=HostConfig(ulimits=[Ulimit(name="bogus", soft=1, hard=1)])))


def test_dockers_default_sysctls(rootfs: str) -> None:
    spec = build(rootfs, req(), default_sysctls=True)
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0",
                                       "net.ipv4.ping_group_range": "0 2147483647"}
    old_kernel = build(rootfs, req(), default_sysctls=True, kernel=(4, 9))
    assert old_kernel["linux"]["sysctl"] == {"net.ipv4.ping_group_range": "0 2147483647"}
    for mode in ("host", "container:db"):
        spec = build(rootfs, req(host=HostConfig(network_mode=mode)), default_sysctls=True,
                     namespace_paths={"network": "/proc/1/ns/net"})
        assert "sysctl" not in spec["linux"]


def test_oom_score_adj_and_sysctls(rootfs: str) -> None:
    spec = build(rootfs, req(host=HostConfig(
        oom_score_adj=500, sysctls={"net.core.somaxconn": "1024", "kernel.shmmax": "1",
                                    "net.ipv4.ip_unprivileged_port_start": "1024"})),
                 default_sysctls=True)
    assert spec["process"]["oomScoreAdj"] == 500
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "1024",
                                       "net.ipv4.ping_group_range": "0 2147483647",
                                       "net.core.somaxconn": "1024", "kernel.shmmax": "1"}
    with pytest.raises(InvalidArgument, match="is not allowed"):
        build(rootfs, req(host=HostConfig(sysctls={"vm.swappiness": "1"})))
    with pytest.raises(InvalidArgument, match="not allowed in the network mode"):
        build(rootfs, req(host=HostConfig(network_mode="host",
                                          sysctls={"net.core.somaxconn": "1"})))


def test_devices_and_cgroup_rules(rootfs: str) -> None:
    devices = [{"path_in_container": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                "permissions": "rw", "file_mode": 0o666}]
    host = HostConfig(devices=[DeviceMapping(path_on_host="/dev/fuse",
                                             path_in_container="/dev/fuse",
                                             cgroup_permissions="rw")],
                      device_cgroup_rules=["c 42:* rmw", "b 8:1 r"])
    linux = build(rootfs, req(host=host), devices=devices)["linux"]
    assert linux["devices"] == [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                 "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert linux["resources"]["devices"][-3:] == [
        {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"},
        {"allow": True, "type": "c", "major": 42, "access": "rmw"},
        {"allow": True, "type": "b", "major": 8, "minor": 1, "access": "r"},
    ]


# --- mounts ---------------------------------------------------------------------------------

def test_tmpfs_and_shm_options(rootfs: str) -> None:
    host = HostConfig(tmpfs={"/run": "rw,size=1m", "/tmp": "exec,mode=1777",
                             "/var/cache/x": ""}, shm_size=128 * MiB,
                      mounts=[Mount(type="tmpfs", target="/scratch", read_only=True,
                                    tmpfs_options=TmpfsOptions(size_bytes=3 * MiB,
                                                               mode=0o700))])
    spec = build(rootfs, req(host=host))
    assert mount_at(spec, "/run") == {
        "destination": "/run", "type": "tmpfs", "source": "tmpfs",
        "options": ["noexec", "nosuid", "nodev", "rprivate", "rw", "size=1m"]}
    assert mount_at(spec, "/tmp")["options"] == ["nosuid", "nodev", "rprivate", "exec",
                                                 "mode=1777"]
    assert mount_at(spec, "/var/cache/x")["options"] == ["noexec", "nosuid", "nodev",
                                                         "rprivate"]
    assert mount_at(spec, "/scratch")["options"] == ["noexec", "nosuid", "nodev", "rprivate",
                                                     "ro", "mode=700", "size=3m"]
    assert mount_at(spec, "/dev/shm")["options"] == ["nosuid", "noexec", "nodev", "mode=1777",
                                                     f"size={128 * MiB}"]
    # user mounts follow the defaults, shallowest first
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/var/cache/x") > dests.index("/run")
    with pytest.raises(InvalidArgument, match="invalid tmpfs option"):
        build(rootfs, req(host=HostConfig(tmpfs={"/run": "bogus=1"})))
    with pytest.raises(InvalidArgument, match="mount path must be absolute"):
        build(rootfs, req(host=HostConfig(tmpfs={"run": ""})))


def test_readonly_rootfs(rootfs: str) -> None:
    spec = build(rootfs, req(host=HostConfig(readonly_rootfs=True, tmpfs={"/run": ""})),
                 resolv_conf="/c/resolv.conf", hosts_file="/c/hosts")
    assert spec["root"] == {"path": rootfs, "readonly": True}
    for dest in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"):
        assert "ro" not in mount_at(spec, dest)["options"], dest
    assert mount_at(spec, "/sys")["options"].count("ro") == 1
    assert mount_at(spec, "/etc/resolv.conf")["options"] == ["rbind", "ro", "rprivate"]
    assert mount_at(spec, "/etc/hosts")["options"] == ["rbind", "ro", "rprivate"]
    assert "ro" not in mount_at(spec, "/run")["options"]


def test_engine_mounts_override_defaults(rootfs: str) -> None:
    mounts = [{"destination": "/data", "type": "bind", "source": "/srv/data",
               "options": ["rbind", "rw", "rslave"]},
              {"destination": "/dev/shm", "type": "bind", "source": "/srv/shm",
               "options": ["rbind", "rw"]},
              {"destination": "/etc/hosts", "type": "bind", "source": "/srv/hosts",
               "options": ["rbind", "ro"]}]
    spec = build(rootfs, req(), mounts=mounts, hosts_file="/c/hosts")
    assert mount_at(spec, "/dev/shm")["source"] == "/srv/shm"
    assert mount_at(spec, "/etc/hosts")["source"] == "/srv/hosts"
    assert spec["linux"]["rootfsPropagation"] == "rslave"
    with pytest.raises(InvalidArgument, match="Duplicate mount point: /data"):
        build(rootfs, req(host=HostConfig(tmpfs={"/data/": ""})), mounts=mounts[:1])


def test_init(rootfs: str) -> None:
    spec = build(rootfs, req(cmd=["top"], host=HostConfig(init=True)),
                 init_path="/usr/libexec/isobox/init")
    assert spec["process"]["args"] == ["/sbin/docker-init", "--", "top"]
    assert spec["mounts"][-1] == {"destination": "/sbin/docker-init", "type": "bind",
                                  "source": "/usr/libexec/isobox/init",
                                  "options": ["bind", "ro"]}
    assert "/sbin/docker-init" not in [m["destination"] for m in build(
        rootfs, req(), init_path="/x")["mounts"]]
    with pytest.raises(Unavailable):
        build(rootfs, req(host=HostConfig(init=True)))


# --- namespaces -------------------------------------------------------------------------------

def kinds(spec: dict[str, Any]) -> list[str]:
    return [ns["type"] for ns in spec["linux"]["namespaces"]]


def test_host_namespaces(rootfs: str) -> None:
    spec = build(rootfs, req(host=HostConfig(ipc_mode="host", pid_mode="host",
                                             network_mode="host")))
    assert kinds(spec) == ["mount", "uts", "cgroup"]
    assert mount_at(spec, "/dev/shm") == {"destination": "/dev/shm", "type": "bind",
                                          "source": "/dev/shm",
                                          "options": ["rbind", "rprivate"]}
    spec = build(rootfs, req(host=HostConfig(uts_mode="host")))
    assert "uts" not in kinds(spec) and "hostname" not in spec
    with pytest.raises(InvalidArgument, match="hostname and the UTS mode"):
        build(rootfs, req(hostname="x", host=HostConfig(uts_mode="host")))


def test_joined_namespaces(rootfs: str) -> None:
    host = HostConfig(ipc_mode="container:db", pid_mode="container:db",
                      network_mode="container:db")
    paths = {"ipc": "/proc/42/ns/ipc", "pid": "/proc/42/ns/pid", "network": "/proc/42/ns/net"}
    spec = build(rootfs, req(host=host), namespace_paths=paths, shm_path="/c/db/shm")
    assert spec["linux"]["namespaces"] == [
        {"type": "mount"}, {"type": "network", "path": "/proc/42/ns/net"}, {"type": "uts"},
        {"type": "pid", "path": "/proc/42/ns/pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "cgroup"}]
    assert mount_at(spec, "/dev/shm")["source"] == "/c/db/shm"
    with pytest.raises(InvalidArgument, match="no namespace path"):
        build(rootfs, req(host=HostConfig(pid_mode="container:db")))
    with pytest.raises(InvalidArgument, match="invalid PID mode"):
        build(rootfs, req(host=HostConfig(pid_mode="private")))


def test_ipc_none_has_no_shm_and_network_none_has_a_netns(rootfs: str) -> None:
    spec = build(rootfs, req(host=HostConfig(ipc_mode="none", network_mode="none")))
    assert "/dev/shm" not in [m["destination"] for m in spec["mounts"]]
    assert "network" in kinds(spec) and "ipc" in kinds(spec)


def test_hostname_domainname_annotations(rootfs: str) -> None:
    spec = build(rootfs, req(domainname="example.org", host=HostConfig(
        isolation="VM", annotations={"user.key": "v"})), hostname="web")
    assert spec["hostname"] == "web" and spec["domainname"] == "example.org"
    assert spec["annotations"][runspec.ANNOTATION_ISOLATION] == "vm"
    assert spec["annotations"]["user.key"] == "v"


def test_does_not_touch_the_request(rootfs: str) -> None:
    create = req(env=["A=1"], host=HostConfig(tmpfs={"/run": ""}))
    before = msgspec.json.encode(create)
    build(rootfs, create, image(env=["B=2"], volumes={"/v": {}}))
    assert msgspec.json.encode(create) == before
