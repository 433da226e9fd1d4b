"""The docker CLI's flag value parsers, pure: sizes, durations, CPUs, ports,
ulimits, restart policies, ``--mount``, ``--device``, env and label files.

Each raises ``ValueError`` with the reason text Docker prints; the click
layer (``isobox.cli.runopts``) adds which flag and value it was.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from isobox.engine.api_types import (
    BindOptions,
    DeviceMapping,
    DriverConfig,
    Mount,
    PortBinding,
    RestartPolicy,
    TmpfsOptions,
    Ulimit,
    VolumeOptions,
)

__all__ = ["parse_add_host", "parse_bool", "parse_device", "parse_duration", "parse_expose",
           "parse_int", "parse_kv_file", "parse_mount", "parse_nano_cpus", "parse_ports",
           "parse_restart", "parse_ulimit", "parse_volume", "ram_in_bytes", "validate_env",
           "validate_ip", "validate_label", "validate_mac", "validate_sysctl"]

_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_INT64 = (-(2**63), 2**63 - 1)


def parse_int(text: str, bits: int = 64, signed: bool = True) -> int:
    """Go's strconv.ParseInt/ParseUint, with its error text."""
    fn = "ParseInt" if signed else "ParseUint"
    if not re.fullmatch(r"[+-]?[0-9]+" if signed else r"[0-9]+", text):
        raise ValueError(f"strconv.{fn}: parsing \"{text}\": invalid syntax")
    value = int(text)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= value <= high:
        raise ValueError(f"strconv.{fn}: parsing \"{text}\": value out of range")
    return value


def parse_bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f"strconv.ParseBool: parsing \"{text}\": invalid syntax")


def ram_in_bytes(text: str) -> int:
    """go-units' RAMInBytes: ``512m``, ``1.5g``, ``1KiB``, ``100``; binary units."""
    m = re.fullmatch(r"([0-9.]*[0-9.])( ?)([A-Za-z]*)", text)
    if not m or not re.search(r"[0-9]", m.group(1)):
        raise ValueError(f"invalid size: '{text}'")
    number, suffix = m.group(1), m.group(3)
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", number):
        raise ValueError(f"strconv.ParseFloat: parsing \"{number}\": invalid syntax")
    size = float(number)
    sfx = suffix.lower()
    if not sfx or sfx == "b":
        return int(size)
    if len(sfx) > 3 or sfx[0] not in _BINARY or (len(sfx) == 2 and sfx[1] != "b") \
            or (len(sfx) == 3 and sfx[1:] != "ib"):
        raise ValueError(f"invalid suffix: '{sfx}'")
    if "." in number:
        return int(size * _BINARY[sfx[0]])
    return int(number) * _BINARY[sfx[0]]


_DURATION_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration (``30s``, ``1m30s``, ``1.5h``, ``-2ms``) → nanoseconds."""
    from fractions import Fraction

    quoted = '"' + text + '"'
    s = text
    sign = 1
    if s[:1] in ("-", "+"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total = Fraction(0)
    while s:
        m = re.match(r"([0-9]*)(\.([0-9]*))?", s)
        assert m is not None
        whole, frac = m.group(1), m.group(3) or ""
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {quoted}")
        s = s[m.end():]
        u = re.match(r"[^0-9.]*", s)
        assert u is not None
        unit = u.group(0)
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit \"{unit}\" in duration {quoted}")
        s = s[u.end():]
        value = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac))
                                              if frac else 0)
        total += value * _DURATION_UNITS[unit]
    result = sign * int(total)
    if not _INT64[0] <= result <= _INT64[1]:
        raise ValueError(f"time: invalid duration {quoted}")
    return result


def parse_nano_cpus(text: str) -> int:
    """``--cpus 1.5`` → 1500000000 (Docker's NanoCPUs: a rational number)."""
    from fractions import Fraction

    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"failed to parse {text} as a rational number") from None
    nano = value * 10**9
    if nano.denominator != 1:
        raise ValueError("value is too precise")
    return int(nano)


_ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
            "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")


def parse_ulimit(text: str) -> Ulimit:
    """go-units' ParseUlimit: ``nofile=1024:2048`` or ``nproc=512``."""
    name, eq, values = text.partition("=")
    if not eq:
        raise ValueError(f"invalid ulimit argument: {text}")
    if name not in _ULIMITS:
        raise ValueError(f"invalid ulimit type: {name}")
    parts = values.split(":")
    if len(parts) > 2:
        raise ValueError(f"too many limit value arguments - {values}, can only have up to "
                         "two, `soft[:hard]`")
    soft = parse_int(parts[0])
    hard = parse_int(parts[1]) if len(parts) == 2 else soft
    if hard != -1 and soft > hard:
        raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: "
                         f"{soft} > {hard}")
    return Ulimit(name=name, soft=soft, hard=hard)


_RESTART_NAMES = ("no", "always", "on-failure", "unless-stopped")


def parse_restart(text: str) -> RestartPolicy:
    """``no``, ``always``, ``unless-stopped``, ``on-failure[:N]``."""
    if not text:
        return RestartPolicy(name="no")
    name, colon, count = text.partition(":")
    if colon and not name:
        raise ValueError("invalid restart policy format: no policy provided before colon")
    retries = 0
    if count:
        try:
            retries = int(count)
        except ValueError:
            raise ValueError("invalid restart policy format: maximum retry count must be "
                             "an integer") from None
    if name not in _RESTART_NAMES:
        raise ValueError(f"invalid restart policy: unknown policy '{name}'; use one of 'no', "
                         "'always', 'on-failure', or 'unless-stopped'")
    if retries and name != "on-failure":
        raise ValueError("invalid restart policy: maximum retry count can only be used with "
                         "'on-failure'")
    if retries < 0:
        raise ValueError("invalid restart policy: maximum retry count cannot be negative")
    return RestartPolicy(name=name, maximum_retry_count=retries)


# --- ports ----------------------------------------------------------------------

def _port_range(text: str) -> tuple[int, int]:
    if not text:
        raise ValueError("empty string specified for ports")
    start_s, dash, end_s = text.partition("-")
    start = parse_int(start_s, 16, signed=False)
    end = parse_int(end_s, 16, signed=False) if dash else start
    if end < start:
        raise ValueError(f"invalid range specified for port: {text}")
    return start, end


def _split_proto(text: str) -> tuple[str, str]:
    parts = text.split("/")
    if not text or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _split_publish(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def parse_ports(specs: Iterable[str]) -> tuple[dict[str, dict[str, Any]],
                                               dict[str, list[PortBinding]]]:
    """``-p [ip:][hostPort:]containerPort[/proto]`` with ranges (nat.ParsePortSpecs)."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[PortBinding]] = {}
    for raw in specs:
        ip, host_port, container = _split_publish(raw)
        proto, container = _split_proto(container)
        if ip.startswith("["):
            if not ip.endswith("]"):
                raise ValueError(f"invalid IP address {ip}")
            ip = ip[1:-1]
        if ip:
            import ipaddress

            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"invalid IP address: {ip}") from None
        if not container:
            raise ValueError(f"no port specified: {raw}<empty>")
        try:
            start, end = _port_range(container)
        except ValueError:
            raise ValueError(f"invalid containerPort: {container}") from None
        host_start = host_end = 0
        if host_port:
            try:
                host_start, host_end = _port_range(host_port)
            except ValueError:
                raise ValueError(f"invalid hostPort: {host_port}") from None
            if end - start != host_end - host_start and end != start:
                raise ValueError("invalid ranges specified for container and host Ports: "
                                 f"{container} and {host_port}")
        if proto.lower() not in ("tcp", "udp", "sctp"):
            raise ValueError(f"invalid proto: {proto}")
        for i in range(end - start + 1):
            port = f"{start + i}/{proto.lower()}"
            hp = str(host_start + i) if host_port else ""
            if start == end and host_start != host_end:
                hp = f"{host_start}-{host_end}"
            exposed.setdefault(port, {})
            bindings.setdefault(port, []).append(PortBinding(host_ip=ip, host_port=hp))
    return exposed, bindings


def parse_expose(items: Iterable[str], exposed: dict[str, dict[str, Any]]) -> None:
    """``--expose 80``, ``--expose 8000-8010/udp``, added to ``exposed``."""
    for item in items:
        if ":" in item:
            raise ValueError(f"invalid port format for --expose: {item}")
        proto, port = _split_proto(item)
        try:
            start, end = _port_range(port)
        except ValueError as exc:
            raise ValueError(f"invalid range format for --expose: {item}, error: {exc}") \
                from None
        for p in range(start, end + 1):
            exposed.setdefault(f"{p}/{proto.lower()}", {})


# --- volumes, mounts, devices ----------------------------------------------------

def _abs_if_relative(source: str, cwd: str) -> str:
    if source == "." or source.startswith("./"):
        return os.path.normpath(os.path.join(cwd, source))
    return source


def parse_volume(spec: str, cwd: str) -> tuple[str | None, str | None]:
    """One ``-v``: (a Binds entry, None) for ``src:dst[:opts]`` (bind or named
    volume; ``./x`` made absolute), (None, target) for an anonymous volume."""
    if not spec:
        raise ValueError("invalid empty volume spec")
    parts = spec.split(":")
    if len(parts) == 1:
        return None, spec
    if any(not p for p in parts):
        raise ValueError(f"invalid spec: {spec}: empty section between colons")
    if len(parts) > 3:
        raise ValueError(f"invalid spec: {spec}: too many colons")
    source = parts[0]
    if source == "." or source.startswith("./"):
        source = _abs_if_relative(source, cwd)
        return ":".join([source, *parts[1:]]), None
    return spec, None


def _csv_fields(text: str) -> list[str]:
    import csv

    rows = list(csv.reader([text]))
    return rows[0] if rows else []


def parse_mount(text: str, cwd: str) -> Mount:
    """``--mount type=bind,source=/a,target=/b,readonly,bind-propagation=rslave``."""
    kind = ""
    source = target = consistency = ""
    read_only = False
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    driver: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    for field in _csv_fields(text):
        key, eq, val = field.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro"):
                read_only = True
            elif key == "volume-nocopy":
                volume["no_copy"] = True
            elif key == "bind-nonrecursive":
                bind["non_recursive"] = True
            else:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
            continue
        try:
            if key == "type":
                kind = val.lower()
            elif key in ("source", "src"):
                source = _abs_if_relative(val, cwd)
            elif key in ("target", "dst", "destination"):
                target = val
            elif key in ("readonly", "ro"):
                read_only = parse_bool(val)
            elif key == "consistency":
                consistency = val.lower()
            elif key == "bind-propagation":
                bind["propagation"] = val.lower()
            elif key == "bind-nonrecursive":
                bind["non_recursive"] = parse_bool(val)
            elif key == "bind-create-mountpoint":
                bind["create_mountpoint"] = parse_bool(val)
            elif key == "volume-driver":
                driver["name"] = val
            elif key == "volume-opt":
                k, _, v = val.partition("=")
                driver.setdefault("options", {})[k] = v
            elif key == "volume-label":
                k, _, v = val.partition("=")
                volume.setdefault("labels", {})[k] = v
            elif key == "volume-nocopy":
                volume["no_copy"] = parse_bool(val)
            elif key == "volume-subpath":
                volume["subpath"] = val
            elif key == "tmpfs-size":
                tmpfs["size_bytes"] = ram_in_bytes(val)
            elif key == "tmpfs-mode":
                if not re.fullmatch(r"[0-7]{1,11}", val):
                    raise ValueError(val)
                tmpfs["mode"] = int(val, 8)
            else:
                raise LookupError
        except LookupError:
            raise ValueError(f"unexpected key '{key}' in '{field}'") from None
        except ValueError:
            raise ValueError(f"invalid value for {key}: {val}") from None
    kind = kind or "volume"
    if kind not in ("bind", "volume", "tmpfs"):
        raise ValueError(f"invalid mount type: {kind}")
    if not target:
        raise ValueError("target is required")
    if driver:
        volume["driver_config"] = DriverConfig(**driver)
    for name, opts in (("volume", volume), ("bind", bind), ("tmpfs", tmpfs)):
        if opts and kind != name:
            raise ValueError(f"cannot mix '{name}-*' options with mount type '{kind}'")
    return Mount(type=kind, source=source, target=target, read_only=read_only,
                 consistency=consistency,
                 bind_options=BindOptions(**bind) if bind else None,
                 volume_options=VolumeOptions(**volume) if volume else None,
                 tmpfs_options=TmpfsOptions(**tmpfs) if tmpfs else None)


def _device_mode(mode: str) -> bool:
    return bool(mode) and set(mode) <= set("rwm") and len(set(mode)) == len(mode)


def parse_device(text: str) -> DeviceMapping:
    """``/dev/host[:/dev/ctr][:rwm]`` (docker's parseLinuxDevice and its checks)."""
    if text.count(":") > 2 or not text.split(":")[0]:
        raise ValueError(f"bad format for path: {text}")
    parts = text.split(":")
    src, dst, mode = parts[0], "", "rwm"
    if len(parts) == 2:
        if _device_mode(parts[1]):
            mode = parts[1]
        else:
            dst = parts[1]
    elif len(parts) == 3:
        dst, mode = parts[1], parts[2]
        if not _device_mode(mode):
            raise ValueError(f"bad mode specified: {mode}")
    dst = dst or src
    if not dst.startswith("/"):
        raise ValueError(f"{dst} is not an absolute path")
    return DeviceMapping(path_on_host=src, path_in_container=dst, cgroup_permissions=mode)


# --- env, labels, hosts, addresses ------------------------------------------------

_WHITESPACE = " \t"


def validate_env(text: str, lookup: Callable[[str], str | None]) -> str:
    """``-e KEY=VAL`` as is; ``-e KEY`` takes KEY's value from ``lookup`` if set."""
    key, eq, _ = text.partition("=")
    if not key:
        raise ValueError(f"invalid environment variable: {text}")
    if eq:
        return text
    value = lookup(key)
    return text if value is None else f"{key}={value}"


def validate_label(text: str) -> str:
    key = text.partition("=")[0].lstrip(_WHITESPACE)
    if not key:
        raise ValueError(f"invalid label '{text}': empty name")
    if any(c in key for c in _WHITESPACE):
        raise ValueError(f"label '{key}' contains whitespaces")
    return text


def parse_kv_file(data: bytes, lookup: Callable[[str], str | None] | None) -> list[str]:
    """An ``--env-file`` / ``--label-file``: ``KEY=VAL`` lines kept verbatim,
    ``#`` comments and blank lines skipped, a bare ``KEY`` taken from
    ``lookup`` (dropped when unset, or always for label files: lookup None)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("invalid utf8 bytes in file") from None
    text = text.removeprefix("\ufeff")
    out = []
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key = key.lstrip(_WHITESPACE)
        if any(c in key for c in _WHITESPACE):
            raise ValueError(f"variable '{key}' contains whitespaces")
        if not key:
            raise ValueError(f"no variable name on line '{line}' (line {number})")
        if eq:
            out.append(f"{key}={value}")
        elif lookup is not None and (found := lookup(key.strip())) is not None:
            out.append(f"{key.strip()}={found}")
    return out


def validate_ip(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"IP address is not correctly formatted: {text}") from None


def validate_mac(text: str) -> str:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}", text.strip()):
        raise ValueError(f"address {text}: invalid MAC address")
    return text.strip()


def parse_add_host(text: str) -> str:
    """``name:ip`` or ``name=ip`` (IPv6 may be bracketed) → Docker's ``name:ip``."""
    import ipaddress

    sep = "=" if "=" in text else ":"
    name, found, ip = text.partition(sep)
    if not found or not name:
        raise ValueError(f"bad format for add-host: \"{text}\"")
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"invalid IP address in add-host: \"{ip}\"") from None
    return f"{name}:{ip}"


_NAMESPACED_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
                                 "kernel.sem", "kernel.shmall", "kernel.shmmax",
                                 "kernel.shmmni", "kernel.shm_rmid_forced"})


def validate_sysctl(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise ValueError(f"sysctl '{text}' is not allowed")
    if key in _NAMESPACED_SYSCTLS or key.startswith(("net.", "fs.mqueue.")):
        return key, value
    raise ValueError(f"sysctl '{text}' is not allowed")
