"""The OCI runtime spec (config.json), versions 1.0 to 1.2, as typed records.

Unknown fields are ignored (the spec allows extensions); fields of the wrong
type are refused with the JSON path in the message. Records come from
``isobox.oci.struct`` rather than msgspec to keep the container start path
light (see that module).
"""

import json

from isobox.errors import InvalidArgument
from isobox.oci.struct import Factory, Struct, ValidationError, convert, to_builtins

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION = "1.2.0"


class _Base(Struct):
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
    user: User = Factory(User)  # type: ignore[assignment]
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
    __renames__ = {"container_id": "containerID", "host_id": "hostID"}
    container_id: int
    host_id: int
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
    __renames__ = {"kernel_tcp": "kernelTCP", "disable_oom_killer": "disableOOMKiller"}
    kernel_tcp: int | None = None
    swappiness: int | None = None
    disable_oom_killer: bool | None = None
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
    __renames__ = {"throttle_read_iops_device": "throttleReadIOPSDevice",
                   "throttle_write_iops_device": "throttleWriteIOPSDevice"}
    throttle_read_iops_device: list[ThrottleDevice] | None = None
    throttle_write_iops_device: list[ThrottleDevice] | None = None


class Pids(_Base):
    limit: int


class HugepageLimit(_Base):
    page_size: int | str
    limit: int


class Resources(_Base):
    devices: list[DeviceCgroup] | None = None
    memory: Memory | None = None
    cpu: CPU | None = None
    __renames__ = {"block_io": "blockIO"}
    block_io: BlockIO | None = None
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


def _decode(cls: "Any", raw: bytes, what: str) -> "Any":
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None
    try:
        return convert(cls, data)
    except ValidationError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None


def decode_spec(raw: bytes) -> Spec:
    spec: Spec = _decode(Spec, raw, "config.json")
    return spec


def spec_from_builtins(data: "dict[str, Any]") -> Spec:
    spec: Spec = convert(Spec, data)
    return spec


def decode_process(raw: bytes) -> Process:
    proc: Process = _decode(Process, raw, "process.json")
    return proc


def decode_resources(raw: bytes) -> Resources:
    res: Resources = _decode(Resources, raw, "resources")
    return res


def encode(value: Struct) -> bytes:
    return json.dumps(to_builtins(value)).encode()

