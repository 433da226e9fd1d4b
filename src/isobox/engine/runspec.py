"""Docker's container options → an OCI runtime spec (config.json), pure.

:func:`merge_config` is Docker's merge of the create request's Config with
the image's (what ``docker inspect`` shows as ``Config``; the engine takes
ExposedPorts, Volumes, Healthcheck, StopSignal and the user to resolve from
it). :func:`build_spec` turns the request into the plain dict an OCI runtime
reads, with Docker's defaults: its capability set, seccomp profile, masked
and read-only paths, mounts, device allow list and namespaces. Every host
fact (capabilities, kernel, cgroup version, paths, device numbers) comes in
as a parameter; nothing here touches the filesystem.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from isobox.engine import runspec_linux as lx
from isobox.engine.api_types import ContainerConfig, CreateRequest, HealthConfig, HostConfig
from isobox.engine.userdb import ResolvedUser
from isobox.errors import InvalidArgument, Unavailable
from isobox.linux import capabilities as caps_mod
from isobox.oci.image_spec import ImageConfig
from isobox.oci.runtime_spec import OCI_VERSION
from isobox.oci.seccomp_profile import default_oci, to_oci
from isobox.oci.struct import to_builtins

__all__ = ["ANNOTATION_ID", "ANNOTATION_IMAGE", "ANNOTATION_ISOLATION", "DEFAULT_PATH",
           "INIT_DESTINATION", "MASKED_PATHS", "READONLY_PATHS", "SecurityOptions",
           "build_spec", "container_capabilities", "merge_config", "parse_security_opts",
           "process_args", "process_env", "replace_or_append_env", "wants_host_devices"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_DESTINATION = "/sbin/docker-init"
ANNOTATION_ID = "io.isobox.container.id"
ANNOTATION_IMAGE = "io.isobox.image"
ANNOTATION_ISOLATION = "io.isobox.isolation"
ISOLATIONS = ("default", "process", "vm", "hyperv")

# moby oci/defaults.go
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"})


# --- Config: Docker's merge with the image ----------------------------------

def _image_health(image: Any) -> HealthConfig | None:
    if image is None:
        return None
    return HealthConfig(test=list(image.test) if image.test else None,
                        interval=image.interval or 0, timeout=image.timeout or 0,
                        start_period=image.start_period or 0,
                        start_interval=image.start_interval or 0, retries=image.retries or 0)


def _env_key(item: str) -> str:
    return item.partition("=")[0]


def merge_config(create: CreateRequest | ContainerConfig,
                 image: ImageConfig | None) -> ContainerConfig:
    """Docker's ``merge`` (daemon/commit.go) of the request's Config over the
    image's, then its checks: ``--entrypoint ""`` resets the entrypoint, and
    a container needs a command ("No command specified")."""
    base = create if type(create) is ContainerConfig else ContainerConfig(**{
        f: getattr(create, f) for f in ContainerConfig.__struct_fields__})
    img = image.config if image is not None else None
    user = base.user
    exposed = dict(base.exposed_ports or {})
    env = list(base.env or [])
    labels = dict(base.labels or {})
    cmd, entrypoint = base.cmd, base.entrypoint
    health = base.healthcheck
    workdir, stop_signal = base.working_dir, base.stop_signal
    volumes = dict(base.volumes or {})
    if img is not None:
        user = user or img.user or ""
        for port, port_value in (img.exposed_ports or {}).items():
            exposed.setdefault(port, port_value)
        keys = {_env_key(e) for e in env}
        env += [e for e in img.env or () if _env_key(e) not in keys]
        for key, value in (img.labels or {}).items():
            labels.setdefault(key, value)
        if not entrypoint:
            if not cmd:
                cmd = list(img.cmd) if img.cmd else None
            if entrypoint is None:
                entrypoint = list(img.entrypoint) if img.entrypoint else None
        image_health = _image_health(img.healthcheck)
        if image_health is not None:
            if health is None:
                health = image_health
            else:
                health = msgspec.structs.replace(
                    health,
                    test=health.test or image_health.test,
                    interval=health.interval or image_health.interval,
                    timeout=health.timeout or image_health.timeout,
                    start_period=health.start_period or image_health.start_period,
                    start_interval=health.start_interval or image_health.start_interval,
                    retries=health.retries or image_health.retries)
        workdir = workdir or img.working_dir or ""
        for path, volume in (img.volumes or {}).items():
            volumes[path] = volume
        stop_signal = stop_signal or img.stop_signal or ""
    if entrypoint is not None and len(entrypoint) == 1 and entrypoint[0] == "":
        entrypoint = None
    if not entrypoint and not cmd:
        raise InvalidArgument("No command specified")
    if workdir and not workdir.startswith("/"):
        raise InvalidArgument(
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    return msgspec.structs.replace(
        base, user=user, exposed_ports=exposed or None, env=env or None,
        labels=labels or None, cmd=cmd, entrypoint=entrypoint, healthcheck=health,
        working_dir=posixpath.normpath(workdir) if workdir else "",
        volumes=volumes or None, stop_signal=stop_signal)


def process_args(config: ContainerConfig) -> list[str]:
    """Entrypoint followed by Cmd, of an already merged Config."""
    args = [*(config.entrypoint or ()), *(config.cmd or ())]
    if not args:
        raise InvalidArgument("No command specified")
    return args


def replace_or_append_env(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Docker's ``ReplaceOrAppendEnvValues``: an override replaces the entry
    with the same key in place, or is appended; a bare ``KEY`` unsets it."""
    out: list[str | None] = list(defaults)
    index = {_env_key(e): i for i, e in enumerate(defaults)}
    for item in overrides:
        key, eq, _ = item.partition("=")
        if not eq:
            if key in index:
                out[index.pop(key)] = None
            continue
        if key in index:
            out[index[key]] = item
        else:
            index[key] = len(out)
            out.append(item)
    return [e for e in out if e is not None]


def process_env(config: ContainerConfig, hostname: str) -> list[str]:
    """PATH, HOSTNAME and (with a tty) TERM=xterm, overridden by Config.Env."""
    base = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if config.tty:
        base.append("TERM=xterm")
    return replace_or_append_env(base, config.env or ())


# --- capabilities and security options ---------------------------------------

def _cap_name(name: str) -> str:
    key = name.upper()
    return key if key.startswith("CAP_") else "CAP_" + key


def _normalize_caps(names: Sequence[str]) -> tuple[list[str], bool]:
    out = []
    for name in names:
        if name.upper() == "ALL":
            return [], True
        key = _cap_name(name)
        if key not in caps_mod.NUMBERS:
            raise InvalidArgument(f"unknown capability: \"{key}\"")
        out.append(key)
    return out, False


def container_capabilities(host: HostConfig,
                           host_caps: Sequence[str] | None = None) -> list[str]:
    """Docker's ``TweakCapabilities``: the default set, less CapDrop, plus
    CapAdd; ``ALL`` in either; privileged gets every capability of the host."""
    all_caps = ([_cap_name(c) for c in host_caps] if host_caps is not None
                else list(caps_mod.NAMES))
    if host.privileged:
        return all_caps
    adds, drops = host.cap_add or [], host.cap_drop or []
    if not adds and not drops:
        return list(caps_mod.DOCKER_DEFAULT)
    cap_drop, drop_all = _normalize_caps(drops)
    cap_add, add_all = _normalize_caps(adds)
    if add_all:
        result = [c for c in all_caps if c not in cap_drop]
    elif drop_all:
        result = cap_add
    else:
        result = [c for c in caps_mod.DOCKER_DEFAULT if c not in cap_drop] + cap_add
    return list(dict.fromkeys(result))


class SecurityOptions(msgspec.Struct, frozen=True, kw_only=True):
    #: None: the default profile; "unconfined"; or a profile's JSON text.
    seccomp: str | None = None
    no_new_privileges: bool = False
    unconfined_paths: bool = False


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def parse_security_opts(opts: Sequence[str]) -> SecurityOptions:
    """Docker's ``parseSecurityOpt``. SELinux labels and AppArmor profiles are
    accepted and ignored (this host enforces neither, as Docker does there)."""
    seccomp: str | None = None
    nnp = unconfined = False
    for opt in opts:
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")
        else:
            raise InvalidArgument(f"invalid --security-opt 1: \"{opt}\"")
        if key in ("label", "apparmor"):
            continue
        if key == "seccomp":
            seccomp = None if value == "builtin" else value
        elif key == "no-new-privileges" and value in _TRUE | _FALSE:
            nnp = value in _TRUE
        elif key == "systempaths" and value == "unconfined":
            unconfined = True
        else:
            raise InvalidArgument(f"invalid --security-opt 2: \"{opt}\"")
    return SecurityOptions(seccomp=seccomp, no_new_privileges=nnp, unconfined_paths=unconfined)


def _seccomp(sec: SecurityOptions, host: HostConfig, caps: list[str], arch: str,
             kernel: tuple[int, int] | None) -> dict[str, Any] | None:
    if sec.seccomp == "unconfined" or host.privileged:
        return None
    if sec.seccomp is None:
        return default_oci(caps, arch, kernel)  # the same, without the typed conversion
    try:
        profile = msgspec.json.decode(sec.seccomp)
    except msgspec.DecodeError as exc:
        raise InvalidArgument(f"decoding seccomp profile failed: {exc}") from None
    if not isinstance(profile, dict):
        raise InvalidArgument("decoding seccomp profile failed: not a JSON object")
    result: dict[str, Any] = to_builtins(to_oci(profile, capabilities=caps, arch=arch,
                                                kernel=kernel))
    return result


def wants_host_devices(create: CreateRequest) -> bool:
    """Privileged containers get every host device: the engine lists them
    (``linux.devices``) and adds them to the spec."""
    return create.host_config.privileged


# --- the spec -------------------------------------------------------------------

def _sysctls(host: HostConfig, kernel: tuple[int, int] | None,
             defaults: bool) -> dict[str, str]:
    net = host.network_mode
    own_net = net != "host" and not net.startswith("container:")
    out: dict[str, str] = {}
    if own_net and defaults:  # Docker's (20.10+) for a private network namespace
        if kernel is None or kernel >= (4, 11):
            out["net.ipv4.ip_unprivileged_port_start"] = "0"
        out["net.ipv4.ping_group_range"] = "0 2147483647"
    for key, value in (host.sysctls or {}).items():
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if host.ipc_mode == "host":
                raise InvalidArgument(f"sysctl {key!r} is not allowed in host IPC namespace")
        elif key.startswith("net."):
            if not own_net:
                raise InvalidArgument(
                    f"sysctl {key!r} is not allowed in the network mode {net!r}")
        elif key in ("kernel.domainname", "kernel.hostname"):
            if host.uts_mode == "host":
                raise InvalidArgument(f"sysctl {key!r} is not allowed in host UTS namespace")
        else:
            raise InvalidArgument(f"sysctl '{key}={value}' is not allowed")
        out[key] = value
    return out


def _check_host(create: CreateRequest) -> None:
    host = create.host_config
    if host.isolation and host.isolation.lower() not in ISOLATIONS:
        raise InvalidArgument(f"invalid isolation: {host.isolation!r}; isobox supports "
                              "'default', 'process', 'vm' and 'hyperv'")
    if host.uts_mode == "host" and create.hostname:
        raise InvalidArgument("conflicting options: hostname and the UTS mode")
    if host.network_mode.startswith("container:") and create.hostname:
        raise InvalidArgument("conflicting options: hostname and the network mode")
    if not -1000 <= host.oom_score_adj <= 1000:
        raise InvalidArgument(f"Invalid value {host.oom_score_adj}, range for oom score adj "
                              "is [-1000, 1000]")


def build_spec(create: CreateRequest, image: ImageConfig | None, *, container_id: str,
               rootfs: str, hostname: str, user: ResolvedUser,
               mounts: Sequence[Mapping[str, Any]], resolv_conf: str | None,
               hosts_file: str | None, hostname_file: str | None, cgroups_path: str,
               seccomp_arch: str = "x86_64", kernel: tuple[int, int] | None = None,
               host_caps: Sequence[str] | None = None, cgroup_version: int = 2,
               namespace_paths: Mapping[str, str] | None = None,
               devices: Sequence[Mapping[str, Any]] = (), init_path: str | None = None,
               shm_path: str | None = None,
               device_numbers: Mapping[str, tuple[int, int]] | None = None,
               default_sysctls: bool = False) -> dict[str, Any]:
    """The OCI config.json (as a dict) for one container.

    ``user`` is the merged Config's user resolved against the image
    (:func:`isobox.engine.userdb.resolve_user` with ``merge_config(...).user``
    and ``HostConfig.GroupAdd``). ``mounts`` are OCI mounts the engine made
    for Binds, Mounts and volumes; ``resolv_conf``/``hosts_file``/
    ``hostname_file`` are host files to bind at /etc/... . ``namespace_paths``
    maps an OCI namespace type (network, ipc, pid) to the path to join for a
    ``container:<id>`` mode. ``devices`` are ``--device`` entries the engine
    stat'ed: ``{path_in_container, type, major, minor, permissions[,
    file_mode, uid, gid]}``. ``init_path`` is the host binary ``--init`` binds
    at /sbin/docker-init. ``shm_path`` replaces the private /dev/shm tmpfs with
    a bind (shareable or ``container:`` IPC). ``device_numbers`` maps the
    block device paths of the Blkio* fields to (major, minor). A privileged
    container's host devices are the engine's to add (:func:`wants_host_devices`).
    ``default_sysctls`` adds Docker's ``net.ipv4.ip_unprivileged_port_start=0``
    and ``net.ipv4.ping_group_range=0 2147483647`` to a container with its
    own network namespace (off until the runtime writes sysctls before it
    makes /proc/sys read-only, as runc does).
    """
    _check_host(create)
    host = create.host_config
    config = merge_config(create, image)
    args = process_args(config)
    if host.init:
        if init_path is None:
            raise Unavailable("--init: no init binary is available on this host")
        args = [INIT_DESTINATION, "--", *args]

    caps = container_capabilities(host, host_caps)
    sec = parse_security_opts(host.security_opt or ())
    process: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid,
                 "additionalGids": list(user.additional_gids or (user.gid,))},
        "args": args,
        "env": process_env(config, hostname),
        "cwd": config.working_dir or "/",
        "capabilities": {"bounding": list(caps), "effective": list(caps),
                         "permitted": list(caps)},
    }
    if config.tty and host.console_size and len(host.console_size) == 2 \
            and any(host.console_size):
        process["consoleSize"] = {"height": host.console_size[0],
                                  "width": host.console_size[1]}
    if limits := lx.rlimits(host.ulimits or ()):
        process["rlimits"] = limits
    if sec.no_new_privileges:
        process["noNewPrivileges"] = True
    process["oomScoreAdj"] = host.oom_score_adj

    uts_private = host.uts_mode != "host"
    network_files = [(dest, src) for dest, src in (("/etc/resolv.conf", resolv_conf),
                                                   ("/etc/hostname", hostname_file),
                                                   ("/etc/hosts", hosts_file)) if src]
    spec_mounts = lx.assemble_mounts(host, extra=mounts, network_files=network_files,
                                     shm_path=shm_path, init_path=init_path if host.init
                                     else None, init_destination=INIT_DESTINATION)

    linux: dict[str, Any] = {
        "namespaces": lx.namespaces(host, cgroup_version=cgroup_version,
                                    paths=namespace_paths or {}),
    }
    if devices:
        linux["devices"] = lx.linux_devices(devices)
    linux["cgroupsPath"] = cgroups_path
    linux["resources"] = lx.resources(host, cgroup_version=cgroup_version, devices=devices,
                                      device_numbers=device_numbers or {})
    if sysctl := _sysctls(host, kernel, default_sysctls):
        linux["sysctl"] = sysctl
    if (seccomp := _seccomp(sec, host, caps, seccomp_arch, kernel)) is not None:
        linux["seccomp"] = seccomp
    if (propagation := lx.rootfs_propagation(spec_mounts)) is not None:
        linux["rootfsPropagation"] = propagation
    if not host.privileged:
        masked: Sequence[str] = (host.masked_paths if host.masked_paths is not None
                                 else MASKED_PATHS)
        readonly: Sequence[str] = (host.readonly_paths if host.readonly_paths is not None
                                   else READONLY_PATHS)
        if sec.unconfined_paths:
            masked = readonly = ()
        if masked:
            linux["maskedPaths"] = list(masked)
        if readonly:
            linux["readonlyPaths"] = list(readonly)

    annotations = dict(host.annotations or {})
    annotations[ANNOTATION_ID] = container_id
    if create.image:
        annotations[ANNOTATION_IMAGE] = create.image
    annotations[ANNOTATION_ISOLATION] = (host.isolation or "default").lower()

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": host.readonly_rootfs},
    }
    if uts_private:
        spec["hostname"] = hostname
        if create.domainname:
            spec["domainname"] = create.domainname
    spec["mounts"] = spec_mounts
    spec["annotations"] = annotations
    spec["linux"] = linux
    return spec
