"""The OCI runtime spec (config.json), versions 1.0 to 1.2, as msgspec Structs.

Unknown fields are ignored (the spec allows extensions); fields of the wrong
type are refused with the JSON path in the message.
"""

from __future__ import annotations

from typing import Any

import msgspec

from isobox.errors import InvalidArgument

OCI_VERSION = "1.2.0"


class _Base(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    pass


class ConsoleSize(_Base):
    height: int = 0
    width: int = 0


class User(_Base):
    uid: int = 0
    gid: int = 0
    umask: int | None = None
    additional_gids: list[int] | None = None
    username: str | None = None


class Capabilities(_Base):
    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


class Rlimit(_Base):
    type: str
    soft: int
    hard: int


class Process(_Base):
    terminal: bool = False
    console_size: ConsoleSize | None = None
    user: User = msgspec.field(default_factory=User)
    args: list[str] | None = None
    command_line: str | None = None
    env: list[str] | None = None
    cwd: str = "/"
    capabilities: Capabilities | None = None
    rlimits: list[Rlimit] | None = None
    no_new_privileges: bool = False
    apparmor_profile: str | None = None
    oom_score_adj: int | None = None
    selinux_label: str | None = None


class Root(_Base):
    path: str
    readonly: bool = False


class Mount(_Base):
    destination: str
    source: str | None = None
    type: str | None = None
    options: list[str] | None = None


class Hook(_Base):
    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    timeout: int | None = None


class Hooks(_Base):
    prestart: list[Hook] | None = None
    create_runtime: list[Hook] | None = None
    create_container: list[Hook] | None = None
    start_container: list[Hook] | None = None
    poststart: list[Hook] | None = None
    poststop: list[Hook] | None = None


class Namespace(_Base):
    type: str
    path: str | None = None


class IDMapping(_Base):
    container_id: int = msgspec.field(name="containerID")
    host_id: int = msgspec.field(name="hostID")
    size: int


class Device(_Base):
    type: str
    path: str
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class DeviceCgroup(_Base):
    allow: bool
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    access: str | None = None


class Memory(_Base):
    limit: int | None = None
    reservation: int | None = None
    swap: int | None = None
    kernel: int | None = None
    kernel_tcp: int | None = msgspec.field(default=None, name="kernelTCP")
    swappiness: int | None = None
    disable_oom_killer: bool | None = msgspec.field(default=None, name="disableOOMKiller")
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class CPU(_Base):
    shares: int | None = None
    quota: int | None = None
    burst: int | None = None
    period: int | None = None
    realtime_runtime: int | None = None
    realtime_period: int | None = None
    cpus: str | None = None
    mems: str | None = None
    idle: int | None = None


class WeightDevice(_Base):
    major: int
    minor: int
    weight: int | None = None
    leaf_weight: int | None = None


class ThrottleDevice(_Base):
    major: int
    minor: int
    rate: int


class BlockIO(_Base):
    weight: int | None = None
    leaf_weight: int | None = None
    weight_device: list[WeightDevice] | None = None
    throttle_read_bps_device: list[ThrottleDevice] | None = None
    throttle_write_bps_device: list[ThrottleDevice] | None = None
    throttle_read_iops_device: list[ThrottleDevice] | None = msgspec.field(
        default=None, name="throttleReadIOPSDevice")
    throttle_write_iops_device: list[ThrottleDevice] | None = msgspec.field(
        default=None, name="throttleWriteIOPSDevice")


class Pids(_Base):
    limit: int


class HugepageLimit(_Base):
    page_size: int | str
    limit: int


class Resources(_Base):
    devices: list[DeviceCgroup] | None = None
    memory: Memory | None = None
    cpu: CPU | None = None
    block_io: BlockIO | None = msgspec.field(default=None, name="blockIO")
    pids: Pids | None = None
    hugepage_limits: list[HugepageLimit] | None = None
    unified: dict[str, str] | None = None


class SeccompArg(_Base):
    index: int
    value: int
    op: str
    value_two: int = 0


class SeccompSyscall(_Base):
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[SeccompArg] | None = None


class Seccomp(_Base):
    default_action: str
    default_errno_ret: int | None = None
    architectures: list[str] | None = None
    flags: list[str] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[SeccompSyscall] | None = None


class Linux(_Base):
    namespaces: list[Namespace] | None = None
    uid_mappings: list[IDMapping] | None = None
    gid_mappings: list[IDMapping] | None = None
    devices: list[Device] | None = None
    cgroups_path: str | None = None
    resources: Resources | None = None
    sysctl: dict[str, str] | None = None
    seccomp: Seccomp | None = None
    rootfs_propagation: str | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    mount_label: str | None = None


class Spec(_Base):
    oci_version: str
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    domainname: str | None = None
    mounts: list[Mount] | None = None
    hooks: Hooks | None = None
    annotations: dict[str, str] | None = None
    linux: Linux | None = None


class State(_Base):
    """What ``state`` prints and what hooks read on stdin (runc's shape)."""

    oci_version: str
    id: str
    status: str
    pid: int = 0
    bundle: str = ""
    annotations: dict[str, str] | None = None


_spec_decoder = msgspec.json.Decoder(Spec)
_process_decoder = msgspec.json.Decoder(Process)
_resources_decoder = msgspec.json.Decoder(Resources)


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, what: str) -> Any:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from exc


def decode_spec(raw: bytes) -> Spec:
    spec: Spec = _decode(_spec_decoder, raw, "config.json")
    return spec


def decode_process(raw: bytes) -> Process:
    proc: Process = _decode(_process_decoder, raw, "process.json")
    return proc


def decode_resources(raw: bytes) -> Resources:
    res: Resources = _decode(_resources_decoder, raw, "resources")
    return res


def encode(value: msgspec.Struct) -> bytes:
    return msgspec.json.encode(value)
