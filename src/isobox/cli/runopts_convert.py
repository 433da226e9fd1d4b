"""Docker's ``run``/``create`` flag values → the Engine API's create body,
as the docker CLI converts them (``cli/command/container/opts.go``).

The values are click's raw strings; errors are :class:`FlagError`, worded
as docker's (``invalid argument "x" for "-m, --memory" flag: ...``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
import msgspec

from isobox.cli import runopts_parse as p
from isobox.engine.api_types import (
    ContainerConfig,
    CreateRequest,
    HealthConfig,
    HostConfig,
    LogConfig,
    NetworkingConfig,
)

__all__ = ["ClientOptions", "FlagError", "client_options", "to_create_request"]


class FlagError(click.BadParameter):
    """A flag value docker would refuse; printed as docker prints it."""

    exit_code = 125

    def format_message(self) -> str:
        return self.message


# The one-letter forms docker shows in its flag errors.
_SHORT = {"--attach": "-a", "--cpu-shares": "-c", "--detach": "-d", "--env": "-e",
          "--hostname": "-h", "--interactive": "-i", "--label": "-l", "--memory": "-m",
          "--publish": "-p", "--publish-all": "-P", "--quiet": "-q", "--tty": "-t",
          "--user": "-u", "--volume": "-v", "--workdir": "-w"}


def _flag_name(long: str) -> str:
    short = _SHORT.get(long)
    return f"{short}, {long}" if short else long


def _convert(long: str, value: str, fn: Callable[[str], Any]) -> Any:
    try:
        return fn(value)
    except ValueError as exc:
        raise FlagError(f"invalid argument \"{value}\" for \"{_flag_name(long)}\" flag: "
                        f"{exc}") from None


class ClientOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What the CLI itself acts on (not part of the create body)."""

    name: str | None = None
    detach: bool = False
    platform: str | None = None
    pull: str = "missing"
    quiet: bool = False
    detach_keys: str | None = None
    sig_proxy: bool = True


def client_options(options: Mapping[str, Any]) -> ClientOptions:
    pull = options.get("pull") or "missing"
    if pull not in ("always", "missing", "never"):
        raise FlagError(f"invalid pull option: '{pull}': must be one of \"always\", "
                        "\"missing\" or \"never\"")
    return ClientOptions(name=options.get("name") or None,
                         detach=bool(options.get("detach")),
                         platform=options.get("platform") or None, pull=pull,
                         quiet=bool(options.get("quiet")),
                         detach_keys=options.get("detach_keys") or None,
                         sig_proxy=bool(options.get("sig_proxy", True)))


def _read_file(long: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise FlagError(f"open {path}: {exc.strerror or exc}") from None


def _kv_files(long: str, paths: Sequence[str],
              lookup: Callable[[str], str | None] | None) -> list[str]:
    out: list[str] = []
    for path in paths:
        try:
            out += p.parse_kv_file(_read_file(long, path), lookup)
        except ValueError as exc:
            raise FlagError(f"{path}: {exc}") from None
    return out


def _security_opts(values: Sequence[str]) -> tuple[list[str], bool]:
    """Docker's CLI: a seccomp profile path is read and passed as JSON text;
    ``systempaths=unconfined`` becomes empty MaskedPaths/ReadonlyPaths."""
    out: list[str] = []
    unconfined_paths = False
    for opt in values:
        key, eq, value = opt.partition("=")
        if not eq and ":" in opt:
            key, _, value = opt.partition(":")
        if key == "systempaths" and value == "unconfined":
            unconfined_paths = True
            continue
        if key == "seccomp" and value not in ("unconfined", "builtin", ""):
            try:
                with open(value, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise FlagError(f"opening seccomp profile ({value}) failed: "
                                f"{exc.strerror or exc}") from None
            try:
                compact = json.dumps(json.loads(raw), separators=(",", ":"))
            except ValueError as exc:
                raise FlagError(f"compacting json for seccomp profile ({value}) failed: "
                                f"{exc}") from None
            out.append(f"seccomp={compact}")
            continue
        out.append(opt)
    return out, unconfined_paths


def _mode(flag: str, value: str | None, allowed: Sequence[str], what: str,
          container: bool) -> str:
    value = value or ""
    if value in allowed or (container and value.startswith("container:")
                            and len(value) > len("container:")):
        return value
    raise FlagError(f"--{flag}: invalid {what} mode")


def _opt_int(options: Mapping[str, Any], key: str, long: str, bits: int = 64) -> int | None:
    value = options.get(key)
    if value is None or value == "":
        return None
    result: int = _convert(long, str(value), lambda v: p.parse_int(v, bits))
    return result


def _opt_size(options: Mapping[str, Any], key: str, long: str) -> int:
    value = options.get(key)
    if not value:
        return 0
    result: int = _convert(long, str(value), p.ram_in_bytes)
    return result


def _opt_duration(options: Mapping[str, Any], key: str, long: str) -> int:
    value = options.get(key)
    if not value:
        return 0
    result: int = _convert(long, str(value), p.parse_duration)
    return result


def _many(options: Mapping[str, Any], key: str) -> list[str]:
    value = options.get(key) or ()
    return [value] if isinstance(value, str) else list(value)


def _health(options: Mapping[str, Any]) -> HealthConfig | None:
    cmd = options.get("health_cmd") or ""
    interval = _opt_duration(options, "health_interval", "--health-interval")
    timeout = _opt_duration(options, "health_timeout", "--health-timeout")
    start_period = _opt_duration(options, "health_start_period", "--health-start-period")
    start_interval = _opt_duration(options, "health_start_interval",
                                   "--health-start-interval")
    retries = _opt_int(options, "health_retries", "--health-retries", 32) or 0
    have = bool(cmd or interval or timeout or start_period or start_interval or retries)
    if options.get("no_healthcheck"):
        if have:
            raise FlagError("--no-healthcheck conflicts with --health-* options")
        return HealthConfig(test=["NONE"])
    if not have:
        return None
    for name, value in (("interval", interval), ("timeout", timeout),
                        ("retries", retries), ("start-period", start_period),
                        ("start-interval", start_interval)):
        if value < 0:
            raise FlagError(f"--health-{name} cannot be negative")
    return HealthConfig(test=["CMD-SHELL", cmd] if cmd else None, interval=interval,
                        timeout=timeout, start_period=start_period,
                        start_interval=start_interval, retries=retries)


def _to_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def to_create_request(image: str, command: Sequence[str], options: Mapping[str, Any], *,
                      environ: Mapping[str, str] | None = None,
                      cwd: str | None = None) -> CreateRequest:
    """The create body docker's CLI would send for ``run``/``create`` with
    these flags. ``options`` are click's values (missing keys take the
    flags' defaults); ``environ`` answers ``-e KEY`` and ``--env-file``'s bare
    keys (default ``os.environ``); ``cwd`` anchors ``./`` sources."""
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    lookup = environ.get
    config, host = _config(image, command, options, lookup, cwd)
    networking = _networking(options)
    if networking is not None:
        host = msgspec.structs.replace(host, network_mode=next(iter(networking)))
    return CreateRequest(**{f: getattr(config, f) for f in ContainerConfig.__struct_fields__},
                         host_config=host,
                         networking_config=NetworkingConfig(endpoints_config=networking)
                         if networking else None)


def _networking(options: Mapping[str, Any]) -> dict[str, dict[str, Any] | None] | None:
    networks = _many(options, "network") or ["default"]
    aliases = _many(options, "network_alias")
    ip, ip6 = options.get("ip") or "", options.get("ip6") or ""
    mac = options.get("mac_address") or ""
    if len(networks) > 1 and (aliases or ip or ip6 or mac):
        raise FlagError("conflicting options: cannot specify both --network-alias, --ip, "
                        "--ip6 or --mac-address and more than one --network")
    out: dict[str, dict[str, Any] | None] = {}
    for i, name in enumerate(networks):
        endpoint: dict[str, Any] = {}
        if i == 0:
            if aliases:
                endpoint["Aliases"] = aliases
            ipam = {}
            if ip:
                ipam["IPv4Address"] = _convert("--ip", ip, p.validate_ip)
            if ip6:
                ipam["IPv6Address"] = _convert("--ip6", ip6, p.validate_ip)
            if ipam:
                endpoint["IPAMConfig"] = ipam
            if mac:
                endpoint["MacAddress"] = _convert("--mac-address", mac, p.validate_mac)
        out[name] = endpoint
    return out


def _config(image: str, command: Sequence[str], options: Mapping[str, Any],
            lookup: Callable[[str], str | None], cwd: str) -> tuple[ContainerConfig, HostConfig]:
    attach = [a.lower() for a in _many(options, "attach")]
    for stream in attach:
        if stream not in ("stdin", "stdout", "stderr"):
            raise FlagError(f"invalid argument \"{stream}\" for \"-a, --attach\" flag: valid "
                            "streams are STDIN, STDOUT and STDERR")
    interactive = bool(options.get("interactive"))
    detach = bool(options.get("detach"))
    if detach and attach:
        raise FlagError("conflicting options: cannot specify both --attach and --detach")
    if attach:
        a_in, a_out, a_err = ("stdin" in attach, "stdout" in attach, "stderr" in attach)
    else:
        a_in, a_out, a_err = interactive, True, True
    if detach:
        a_in = a_out = a_err = False

    env = _kv_files("--env-file", _many(options, "env_file"), lookup)
    env += [_convert("--env", e, lambda v: p.validate_env(v, lookup))
            for e in _many(options, "env")]
    labels = _kv_files("--label-file", _many(options, "label_file"), None)
    labels += [_convert("--label", lbl, p.validate_label) for lbl in _many(options, "label")]

    try:
        exposed, bindings = p.parse_ports(_many(options, "publish"))
        p.parse_expose(_many(options, "expose"), exposed)
    except ValueError as exc:
        raise FlagError(str(exc)) from None

    binds: list[str] = []
    volumes: dict[str, dict[str, Any]] = {}
    for spec in _many(options, "volume"):
        bind, anonymous = _convert("--volume", spec, lambda v: p.parse_volume(v, cwd))
        if bind is not None:
            binds.append(bind)
        else:
            volumes[anonymous] = {}
    mounts = [_convert("--mount", m, lambda v: p.parse_mount(v, cwd))
              for m in _many(options, "mount")]

    entrypoint_opt = options.get("entrypoint")
    entrypoint = None if entrypoint_opt is None else [entrypoint_opt]
    stop_timeout = _opt_int(options, "stop_timeout", "--stop-timeout", 32)
    hostname = options.get("hostname") or ""
    if len(hostname) > 64:
        raise FlagError(f"invalid hostname: {hostname}: too long")

    config = ContainerConfig(
        hostname=hostname, domainname=options.get("domainname") or "",
        user=options.get("user") or "", attach_stdin=a_in, attach_stdout=a_out,
        attach_stderr=a_err, exposed_ports=exposed or None,
        tty=bool(options.get("tty")), open_stdin=interactive,
        stdin_once=interactive and a_in, env=env or None,
        cmd=list(command) or None, healthcheck=_health(options), image=image,
        volumes=volumes or None, working_dir=options.get("workdir") or "",
        entrypoint=entrypoint, mac_address=options.get("mac_address") or "",
        labels={k: v for k, v in (lbl.partition("=")[::2] for lbl in labels)} or None,
        stop_signal=options.get("stop_signal") or "", stop_timeout=stop_timeout,
    )
    return config, _host_config(options, binds, mounts, bindings)


def _host_config(options: Mapping[str, Any], binds: list[str], mounts: list[Any],
                 bindings: dict[str, Any]) -> HostConfig:
    restart = _convert("--restart", options.get("restart") or "no", p.parse_restart)
    if options.get("rm") and restart.name != "no":
        raise FlagError("conflicting options: cannot specify both --restart and --rm")
    log_driver = options.get("log_driver") or ""
    log_opts = _many(options, "log_opt")
    if log_driver == "none" and log_opts:
        raise FlagError(f"invalid logging opts for driver {log_driver}")
    security, unconfined_paths = _security_opts(_many(options, "security_opt"))
    isolation = (options.get("isolation") or "").lower()
    if isolation not in ("", "default", "process", "vm", "hyperv"):
        raise FlagError(f"invalid isolation: \"{options.get('isolation')}\": isobox "
                        "supports 'default', 'process', 'vm' and 'hyperv'")
    swappiness = _opt_int(options, "memory_swappiness", "--memory-swappiness")
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise FlagError(f"invalid value: {swappiness}. Valid memory swappiness range is 0-100")
    swap_raw = options.get("memory_swap") or ""
    memory_swap = -1 if swap_raw == "-1" else _opt_size(options, "memory_swap",
                                                        "--memory-swap")
    cpus = options.get("cpus")
    for rule in _many(options, "device_cgroup_rule"):
        _convert("--device-cgroup-rule", rule, _check_cgroup_rule)
    sysctls = dict(_convert("--sysctl", s, p.validate_sysctl)
                   for s in _many(options, "sysctl"))
    ulimits: dict[str, Any] = {}
    for text in _many(options, "ulimit"):
        ul = _convert("--ulimit", text, p.parse_ulimit)
        ulimits[ul.name] = ul
    tmpfs = {}
    for text in _many(options, "tmpfs"):
        dest, _, data = text.partition(":")
        tmpfs[dest] = data
    return HostConfig(
        binds=binds or None, container_id_file=options.get("cidfile") or "",
        log_config=LogConfig(type=log_driver, config=_to_map(log_opts) or None)
        if log_driver or log_opts else None,
        port_bindings=bindings or None, restart_policy=restart,
        auto_remove=bool(options.get("rm")),
        volume_driver=options.get("volume_driver") or "",
        volumes_from=_many(options, "volumes_from") or None, mounts=mounts or None,
        cap_add=_many(options, "cap_add") or None, cap_drop=_many(options, "cap_drop") or None,
        cgroupns_mode=_mode("cgroupns", options.get("cgroupns"), ("", "host", "private"),
                            "CGROUP", False),
        dns=[_convert("--dns", d, p.validate_ip) for d in _many(options, "dns")] or None,
        dns_options=_many(options, "dns_option") or None,
        dns_search=_many(options, "dns_search") or None,
        extra_hosts=[_convert("--add-host", h, p.parse_add_host)
                     for h in _many(options, "add_host")] or None,
        group_add=_many(options, "group_add") or None,
        ipc_mode=_mode("ipc", options.get("ipc"),
                       ("", "none", "private", "shareable", "host"), "IPC", True),
        links=_many(options, "link") or None,
        oom_score_adj=_opt_int(options, "oom_score_adj", "--oom-score-adj") or 0,
        pid_mode=_mode("pid", options.get("pid"), ("", "host"), "PID", True),
        privileged=bool(options.get("privileged")),
        publish_all_ports=bool(options.get("publish_all")),
        readonly_rootfs=bool(options.get("read_only")),
        security_opt=security or None,
        storage_opt=_to_map(_many(options, "storage_opt")) or None,
        tmpfs=tmpfs or None,
        uts_mode=_mode("uts", options.get("uts"), ("", "host"), "UTS", False),
        userns_mode=_mode("userns", options.get("userns"), ("", "host"), "USER", False),
        shm_size=_opt_size(options, "shm_size", "--shm-size"),
        sysctls=sysctls or None, runtime=options.get("runtime") or "",
        isolation=isolation,
        masked_paths=[] if unconfined_paths else None,
        readonly_paths=[] if unconfined_paths else None,
        cpu_shares=_opt_int(options, "cpu_shares", "--cpu-shares") or 0,
        memory=_opt_size(options, "memory", "--memory"),
        nano_cpus=_convert("--cpus", cpus, p.parse_nano_cpus) if cpus else 0,
        cgroup_parent=options.get("cgroup_parent") or "",
        blkio_weight=_opt_int(options, "blkio_weight", "--blkio-weight", 16) or 0,
        cpu_period=_opt_int(options, "cpu_period", "--cpu-period") or 0,
        cpu_quota=_opt_int(options, "cpu_quota", "--cpu-quota") or 0,
        cpu_realtime_period=_opt_int(options, "cpu_rt_period", "--cpu-rt-period") or 0,
        cpu_realtime_runtime=_opt_int(options, "cpu_rt_runtime", "--cpu-rt-runtime") or 0,
        cpuset_cpus=options.get("cpuset_cpus") or "",
        cpuset_mems=options.get("cpuset_mems") or "",
        devices=[_convert("--device", d, p.parse_device)
                 for d in _many(options, "device")] or None,
        device_cgroup_rules=_many(options, "device_cgroup_rule") or None,
        memory_reservation=_opt_size(options, "memory_reservation", "--memory-reservation"),
        memory_swap=memory_swap, memory_swappiness=swappiness,
        oom_kill_disable=True if options.get("oom_kill_disable") else None,
        pids_limit=_opt_int(options, "pids_limit", "--pids-limit"),
        ulimits=list(ulimits.values()) or None,
        init=True if options.get("init") else None,
    )


def _check_cgroup_rule(text: str) -> str:
    if not re.fullmatch(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})", text):
        raise ValueError(f"invalid device cgroup format '{text}'")
    return text
