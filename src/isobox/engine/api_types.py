"""The Docker Engine API's container-create body, as msgspec Structs.

Field names on the wire are Docker's (PascalCase, with Docker's own spelling
where it is not plain PascalCase: ``UTSMode``, ``ContainerIDFile``,
``BlkioDeviceReadIOps``...). The engine, the CLI and the API daemon share
these: the CLI builds a :class:`CreateRequest` as the docker CLI would, the
daemon decodes one from ``POST /containers/create``, and the engine turns it
into an OCI spec (``isobox.engine.runspec``).

Go encodes nil slices and maps as ``null``, so every list and dict field is
optional; scalars Docker sends as pointers (``OomKillDisable``, ``Init``,
``MemorySwappiness``, ``PidsLimit``, ``StopTimeout``) are optional too.
Unknown fields are ignored, as Docker ignores them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from isobox.errors import InvalidArgument

__all__ = [
    "BindOptions", "BindSpec", "ContainerConfig", "CreateRequest", "DeviceMapping",
    "DriverConfig", "HealthConfig", "HostConfig", "LogConfig", "Mount", "NetworkingConfig",
    "PortBinding", "RestartPolicy", "ThrottleDevice", "TmpfsOptions", "Ulimit",
    "VolumeOptions", "WeightDevice", "decode_create", "decode_host_config", "encode",
    "parse_bind",
]


class _Base(msgspec.Struct, omit_defaults=True, kw_only=True, rename="pascal"):
    pass


class HealthConfig(_Base):
    """Durations are nanoseconds, as in the API."""

    test: list[str] | None = None
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


class ContainerConfig(_Base):
    """``container.Config``: what belongs to the container, not the host."""

    hostname: str = ""
    domainname: str = ""
    user: str = ""
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    exposed_ports: dict[str, dict[str, Any]] | None = None
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    env: list[str] | None = None
    cmd: list[str] | None = None
    healthcheck: HealthConfig | None = None
    args_escaped: bool = False
    image: str = ""
    volumes: dict[str, dict[str, Any]] | None = None
    working_dir: str = ""
    entrypoint: list[str] | None = None
    network_disabled: bool = False
    mac_address: str = ""
    on_build: list[str] | None = None
    labels: dict[str, str] | None = None
    stop_signal: str = ""
    stop_timeout: int | None = None
    shell: list[str] | None = None


class LogConfig(_Base):
    type: str = ""
    config: dict[str, str] | None = None


class PortBinding(_Base):
    host_ip: str = ""
    host_port: str = ""


class RestartPolicy(_Base):
    name: str = ""
    maximum_retry_count: int = 0


class BindOptions(_Base):
    propagation: str = ""
    non_recursive: bool = False
    create_mountpoint: bool = False
    read_only_non_recursive: bool = False
    read_only_force_recursive: bool = False


class DriverConfig(_Base):
    name: str = ""
    options: dict[str, str] | None = None


class VolumeOptions(_Base):
    no_copy: bool = False
    labels: dict[str, str] | None = None
    subpath: str = ""
    driver_config: DriverConfig | None = None


class TmpfsOptions(_Base):
    size_bytes: int = 0
    mode: int = 0
    options: list[list[str]] | None = None


class Mount(_Base):
    """One ``--mount``: ``Type`` is ``bind``, ``volume`` or ``tmpfs``."""

    type: str = ""
    source: str = ""
    target: str = ""
    read_only: bool = False
    consistency: str = ""
    bind_options: BindOptions | None = None
    volume_options: VolumeOptions | None = None
    tmpfs_options: TmpfsOptions | None = None


class DeviceMapping(_Base):
    path_on_host: str = ""
    path_in_container: str = ""
    cgroup_permissions: str = ""


class WeightDevice(_Base):
    path: str = ""
    weight: int = 0


class ThrottleDevice(_Base):
    path: str = ""
    rate: int = 0


class Ulimit(_Base):
    name: str = ""
    soft: int = 0
    hard: int = 0


class HostConfig(_Base):
    """``container.HostConfig``, with ``Resources`` inline as Docker has it."""

    binds: list[str] | None = None
    container_id_file: str = msgspec.field(default="", name="ContainerIDFile")
    log_config: LogConfig | None = None
    network_mode: str = ""
    port_bindings: dict[str, list[PortBinding] | None] | None = None
    restart_policy: RestartPolicy | None = None
    auto_remove: bool = False
    volume_driver: str = ""
    volumes_from: list[str] | None = None
    mounts: list[Mount] | None = None
    console_size: list[int] | None = None
    annotations: dict[str, str] | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    cgroupns_mode: str = ""
    dns: list[str] | None = None
    dns_options: list[str] | None = None
    dns_search: list[str] | None = None
    extra_hosts: list[str] | None = None
    group_add: list[str] | None = None
    ipc_mode: str = ""
    cgroup: str = ""
    links: list[str] | None = None
    oom_score_adj: int = 0
    pid_mode: str = ""
    privileged: bool = False
    publish_all_ports: bool = False
    readonly_rootfs: bool = False
    security_opt: list[str] | None = None
    storage_opt: dict[str, str] | None = None
    tmpfs: dict[str, str] | None = None
    uts_mode: str = msgspec.field(default="", name="UTSMode")
    userns_mode: str = ""
    shm_size: int = 0
    sysctls: dict[str, str] | None = None
    runtime: str = ""
    isolation: str = ""
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    # Resources (inline)
    cpu_shares: int = 0
    memory: int = 0
    nano_cpus: int = msgspec.field(default=0, name="NanoCpus")
    cgroup_parent: str = ""
    blkio_weight: int = 0
    blkio_weight_device: list[WeightDevice] | None = None
    blkio_device_read_bps: list[ThrottleDevice] | None = None
    blkio_device_write_bps: list[ThrottleDevice] | None = None
    blkio_device_read_iops: list[ThrottleDevice] | None = msgspec.field(
        default=None, name="BlkioDeviceReadIOps")
    blkio_device_write_iops: list[ThrottleDevice] | None = msgspec.field(
        default=None, name="BlkioDeviceWriteIOps")
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_realtime_period: int = 0
    cpu_realtime_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    devices: list[DeviceMapping] | None = None
    device_cgroup_rules: list[str] | None = None
    device_requests: list[dict[str, Any]] | None = None
    kernel_memory: int = 0
    kernel_memory_tcp: int = msgspec.field(default=0, name="KernelMemoryTCP")
    memory_reservation: int = 0
    memory_swap: int = 0
    memory_swappiness: int | None = None
    oom_kill_disable: bool | None = None
    pids_limit: int | None = None
    ulimits: list[Ulimit] | None = None
    init: bool | None = None


class NetworkingConfig(_Base):
    """Endpoint settings per network, kept loose until networking lands."""

    endpoints_config: dict[str, dict[str, Any] | None] | None = None


class CreateRequest(ContainerConfig):
    """The body of ``POST /containers/create``: Config's fields at the top
    level, plus ``HostConfig`` and ``NetworkingConfig``."""

    host_config: HostConfig = msgspec.field(default_factory=HostConfig)
    networking_config: NetworkingConfig | None = None


# Fields of type StrSlice in Docker's API: a JSON string means a one-element list.
_STR_SLICES = ("Cmd", "Entrypoint", "Shell")


def _decode(data: Any, type_: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        raise InvalidArgument(f"invalid {what}: {exc}") from None


def _load(raw: bytes | str, what: str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"{what} is not valid JSON: {exc}") from None


def decode_create(raw: bytes | str | dict[str, Any]) -> CreateRequest:
    """A create body (JSON text or decoded JSON) → CreateRequest.

    Errors are InvalidArgument naming the field: ``Expected `int`, got `str` -
    at `$.HostConfig.Memory```."""
    data = _load(raw, "container config") if isinstance(raw, bytes | str) else raw
    if not isinstance(data, dict):
        raise InvalidArgument("invalid container config: expected a JSON object")
    data = dict(data)
    for key in _STR_SLICES:
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    if data.get("HostConfig", ...) is None:
        del data["HostConfig"]
    result: CreateRequest = _decode(data, CreateRequest, "container config")
    return result


def decode_host_config(raw: bytes | str | dict[str, Any]) -> HostConfig:
    data = _load(raw, "host config") if isinstance(raw, bytes | str) else raw
    result: HostConfig = _decode(data, HostConfig, "host config")
    return result


def encode(value: msgspec.Struct) -> bytes:
    return msgspec.json.encode(value)


# --- Binds: "source:target[:options]" -------------------------------------

_BIND_MODES = frozenset({"rw", "ro", "z", "Z", "nocopy", "consistent", "cached", "delegated"})
PROPAGATION_MODES = frozenset({"shared", "rshared", "slave", "rslave", "private", "rprivate"})


class BindSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed ``HostConfig.Binds`` entry.

    ``kind`` is ``bind`` (the source is an absolute host path) or ``volume``
    (the source is a volume name, or empty for an anonymous volume)."""

    kind: str
    source: str
    target: str
    read_only: bool = False
    propagation: str = ""
    no_copy: bool = False
    relabel: str = ""


def parse_bind(spec: str) -> BindSpec:
    """Parse a Binds entry the way Docker's daemon does on Linux
    (``/host:/ctr:ro,rslave``, ``name:/ctr``, ``/ctr``)."""
    parts = spec.split(":")
    if not spec or len(parts) > 3 or any(not p for p in parts):
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    mode = ""
    if len(parts) == 1:
        source, target = "", parts[0]
    elif len(parts) == 2:
        source, target = parts
    else:
        source, target, mode = parts
    if not target.startswith("/"):
        raise InvalidArgument(
            f"invalid volume specification: '{spec}': invalid mount config: "
            f"invalid mount path: '{target}' mount path must be absolute")
    if target.rstrip("/") == "":
        raise InvalidArgument(
            f"invalid volume specification: '{spec}': invalid mount config: "
            "destination can't be '/'")
    read_only = False
    propagation = relabel = ""
    no_copy = False
    seen: set[str] = set()
    for opt in mode.split(",") if mode else ():
        kind = ("rw" if opt in ("rw", "ro") else "prop" if opt in PROPAGATION_MODES
                else "label" if opt in ("z", "Z") else opt)
        if (opt not in _BIND_MODES and opt not in PROPAGATION_MODES) or kind in seen:
            raise InvalidArgument(f"invalid mode: {mode}")
        seen.add(kind)
        if opt in ("ro", "rw"):
            read_only = opt == "ro"
        elif opt in PROPAGATION_MODES:
            propagation = opt
        elif opt in ("z", "Z"):
            relabel = opt
        elif opt == "nocopy":
            no_copy = True
    kind = "bind" if source.startswith("/") else "volume"
    if kind == "bind" and no_copy:
        raise InvalidArgument(f"invalid mode: {mode}")
    if kind == "volume" and propagation:
        raise InvalidArgument(f"invalid mode: {mode}")
    return BindSpec(kind=kind, source=source, target=target, read_only=read_only,
                    propagation=propagation, no_copy=no_copy, relabel=relabel)
