"""The ``linux`` and ``mounts`` parts of a container's OCI spec, Docker's way:
namespaces from the IPC/PID/UTS/network/cgroupns modes, the default mounts
with ``--tmpfs`` and the engine's mounts, cgroup resources, device rules and
rlimits. Pure: every host fact comes in as a parameter.

Docker's sources for each rule: moby ``oci/defaults.go`` (default mounts and
paths), ``daemon/oci_linux.go`` (``WithNamespaces``, ``WithMounts``,
``WithDevices``, ``WithResources``), ``daemon/daemon_unix.go`` (the limits
it refuses) and ``pkg/mount`` (``MergeTmpfsOptions``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from isobox.engine.api_types import HostConfig, TmpfsOptions, Ulimit
from isobox.errors import InvalidArgument

__all__ = ["DEFAULT_SHM_SIZE", "MIN_MEMORY", "ULIMIT_NAMES", "assemble_mounts", "device_rules",
           "merge_tmpfs_options", "namespaces", "resources", "rlimits", "tmpfs_data",
           "tmpfs_mount"]

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
MIN_MEMORY = 6 * 1024 * 1024
RLIM_INFINITY = 2**64 - 1

ULIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")

# runc's allow list (libcontainer/specconv AllowedDevices), after "deny all".
_DEFAULT_DEVICE_RULES: tuple[tuple[str, int | None, int | None, str], ...] = (
    ("c", None, None, "m"), ("b", None, None, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 5, "rwm"), ("c", 1, 7, "rwm"), ("c", 1, 8, "rwm"),
    ("c", 1, 9, "rwm"), ("c", 5, 0, "rwm"), ("c", 5, 1, "rwm"), ("c", 5, 2, "rwm"),
    ("c", 136, None, "rwm"), ("c", 10, 200, "rwm"),
)
_CGROUP_RULE = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})")


# --- namespaces -------------------------------------------------------------

def _container_ref(mode: str) -> bool:
    return mode.startswith("container:") and len(mode) > len("container:")


def _join(kind: str, mode: str, paths: Mapping[str, str]) -> dict[str, str]:
    path = paths.get(kind)
    if not path:
        raise InvalidArgument(f"{kind} mode {mode}: the engine gave no namespace path to join")
    return {"type": kind, "path": path}


def namespaces(host: HostConfig, *, cgroup_version: int,
               paths: Mapping[str, str]) -> list[dict[str, str]]:
    """Docker's order: mount, network, uts, pid, ipc, then cgroup. ``host``
    drops a namespace (the container shares the host's); ``container:<id>``
    joins the one at ``paths[kind]``."""
    out: list[dict[str, str]] = [{"type": "mount"}]

    net = host.network_mode
    if _container_ref(net):
        out.append(_join("network", net, paths))
    elif net == "container:":
        raise InvalidArgument(f"invalid network mode: {net}")
    elif net != "host":
        out.append({"type": "network"})  # none, bridge, default, a user network

    if host.uts_mode == "":
        out.append({"type": "uts"})
    elif host.uts_mode != "host":
        raise InvalidArgument(f"invalid UTS mode: {host.uts_mode}")

    pid = host.pid_mode
    if pid == "":
        out.append({"type": "pid"})
    elif _container_ref(pid):
        out.append(_join("pid", pid, paths))
    elif pid != "host":
        raise InvalidArgument(f"invalid PID mode: {pid}")

    ipc = host.ipc_mode
    if ipc in ("", "private", "shareable", "none"):
        out.append({"type": "ipc"})
    elif _container_ref(ipc):
        out.append(_join("ipc", ipc, paths))
    elif ipc != "host":
        raise InvalidArgument(f"invalid IPC mode: {ipc}")

    cgroupns = host.cgroupns_mode or ("private" if cgroup_version == 2 else "host")
    if cgroupns == "private":
        out.append({"type": "cgroup"})
    elif cgroupns != "host":
        raise InvalidArgument(f"invalid cgroup namespace mode: {host.cgroupns_mode}")

    if host.userns_mode not in ("", "host"):
        raise InvalidArgument(f"invalid USER mode: {host.userns_mode}")
    return out


# --- mounts -----------------------------------------------------------------

# Flags that MergeTmpfsOptions treats as one key with their inverse.
_TMPFS_FLAG_KEYS = {
    "ro": "rdonly", "rw": "rdonly", "suid": "nosuid", "nosuid": "nosuid",
    "dev": "nodev", "nodev": "nodev", "exec": "noexec", "noexec": "noexec",
    "sync": "sync", "async": "sync", "dirsync": "dirsync", "remount": "remount",
    "mand": "mand", "nomand": "mand", "atime": "noatime", "noatime": "noatime",
    "diratime": "nodiratime", "nodiratime": "nodiratime", "bind": "bind", "rbind": "bind",
    "relatime": "relatime", "norelatime": "relatime", "strictatime": "strictatime",
    "nostrictatime": "strictatime",
    "shared": "propagation", "rshared": "propagation", "slave": "propagation",
    "rslave": "propagation", "private": "propagation", "rprivate": "propagation",
    "unbindable": "propagation", "runbindable": "propagation",
}
_TMPFS_DATA_KEYS = frozenset({"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})


def merge_tmpfs_options(options: Sequence[str]) -> list[str]:
    """Docker's ``MergeTmpfsOptions``: a later option wins over an earlier one
    with the same key (``exec`` over ``noexec``, ``size=`` over ``size=``)."""
    seen: set[str] = set()
    out: list[str] = []
    for option in reversed(options):
        if option == "defaults":
            continue
        key = _TMPFS_FLAG_KEYS.get(option)
        if key is None:
            name, eq, _ = option.partition("=")
            if not eq or name not in _TMPFS_DATA_KEYS:
                raise InvalidArgument(f"invalid tmpfs option {option!r}")
            key = "data:" + name
        if key not in seen:
            seen.add(key)
            out.insert(0, option)
    return out


def tmpfs_mount(destination: str, data: str = "") -> dict[str, Any]:
    """One ``--tmpfs /dest:opts`` as an OCI mount, with Docker's defaults."""
    if not destination.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type \"tmpfs\": invalid mount path: "
                              f"'{destination}' mount path must be absolute")
    options = ["noexec", "nosuid", "nodev", "rprivate"]
    options += [o for o in data.split(",") if o] if data else []
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": merge_tmpfs_options(options)}


def tmpfs_data(opts: TmpfsOptions | None, read_only: bool = False) -> str:
    """A ``--mount type=tmpfs`` mount's options as ``--tmpfs`` data (Docker's
    ``ConvertTmpfsOptions``); give the result to :func:`tmpfs_mount`."""
    out = ["ro"] if read_only else []
    if opts is not None and opts.mode:
        out.append(f"mode={opts.mode:o}")
    if opts is not None and opts.size_bytes:
        size, suffix = opts.size_bytes, ""
        for unit, divisor in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % divisor == 0:
                size, suffix = size // divisor, unit
                break
        out.append(f"size={size}{suffix}")
    if opts is not None:
        out += ["=".join(o) for o in opts.options or () if o]
    return ",".join(out)


def _default_mounts(*, privileged: bool, cgroup_ro: bool) -> list[dict[str, Any]]:
    ro = [] if privileged else ["ro"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", *ro]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*(["ro"] if cgroup_ro else []), "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]


def _shm_mount(host: HostConfig, shm_path: str | None) -> dict[str, Any] | None:
    ipc = host.ipc_mode
    if ipc == "none":
        return None
    if shm_path is None and ipc == "host":
        shm_path = "/dev/shm"
    if shm_path is not None:
        return {"destination": "/dev/shm", "type": "bind", "source": shm_path,
                "options": ["rbind", "rprivate"]}
    if _container_ref(ipc):
        raise InvalidArgument(f"IPC mode {ipc}: the engine gave no /dev/shm to share")
    if host.shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    size = host.shm_size or DEFAULT_SHM_SIZE
    return {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={size}"]}


def _depth(mount: Mapping[str, Any]) -> int:
    parts = [p for p in str(mount["destination"]).split("/") if p and p != "."]
    return len(parts)


_KEEP_RW_WHEN_RO_ROOT = frozenset({"/proc", "/dev/pts", "/dev/shm", "/dev/mqueue", "/dev"})


def assemble_mounts(host: HostConfig, *, extra: Sequence[Mapping[str, Any]],
                    network_files: Sequence[tuple[str, str]], shm_path: str | None,
                    init_path: str | None, init_destination: str) -> list[dict[str, Any]]:
    """Default mounts minus those a user mount replaces, then the user mounts
    (the engine's, ``--tmpfs``, resolv.conf/hostname/hosts) sorted by depth,
    then the init binary."""
    user: list[dict[str, Any]] = [dict(m) for m in extra]
    for dest, data in (host.tmpfs or {}).items():
        user.append(tmpfs_mount(dest, data))
    for mount in host.mounts or ():  # --mount type=tmpfs (the engine does the others)
        if mount.type == "tmpfs":
            user.append(tmpfs_mount(mount.target,
                                    tmpfs_data(mount.tmpfs_options, mount.read_only)))
    taken: set[str] = set()
    for m in user:
        dest = _clean(str(m.get("destination", "")))
        if dest in taken:
            raise InvalidArgument(f"Duplicate mount point: {dest}")
        taken.add(dest)
    for dest, source in network_files:
        if dest not in taken:
            opts = ["rbind", *(["ro"] if host.readonly_rootfs else []), "rprivate"]
            user.append({"destination": dest, "type": "bind", "source": source,
                         "options": opts})
    user.sort(key=_depth)

    privileged = host.privileged
    defaults = _default_mounts(privileged=privileged, cgroup_ro=not privileged)
    shm = _shm_mount(host, shm_path)
    if shm is not None:
        defaults.append(shm)
    over_dev = "/dev" in taken
    out: list[dict[str, Any]] = []
    for m in defaults:
        dest = m["destination"]
        if dest in taken or (over_dev and dest.startswith("/dev/")):
            continue
        if (host.readonly_rootfs and dest not in _KEEP_RW_WHEN_RO_ROOT
                and "ro" not in m["options"]):
            m["options"] = [*m["options"], "ro"]
        out.append(m)
    out += user
    if init_path is not None:
        out.append({"destination": init_destination, "type": "bind", "source": init_path,
                    "options": ["bind", "ro"]})
    return out


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    return "/" + "/".join(parts)


def rootfs_propagation(mounts: Sequence[Mapping[str, Any]]) -> str | None:
    """Docker makes the rootfs shared (slave) when a mount asks for shared (slave)."""
    opts = {o for m in mounts for o in m.get("options") or ()}
    if opts & {"shared", "rshared"}:
        return "shared"
    if opts & {"slave", "rslave"}:
        return "rslave"
    return None


# --- devices and resources ----------------------------------------------------

def _rule(allow: bool, kind: str | None, major: int | None, minor: int | None,
          access: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": allow}
    if kind is not None:
        rule["type"] = kind
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    rule["access"] = access
    return rule


def parse_cgroup_rule(text: str) -> dict[str, Any]:
    """``c 1:3 rwm``, ``b 8:* r``, ``a *:* rwm`` → an allow rule."""
    m = _CGROUP_RULE.fullmatch(text)
    if not m:
        raise InvalidArgument(f"invalid device cgroup format '{text}'")
    kind, major, minor, access = m.groups()
    return _rule(True, kind, None if major == "*" else int(major),
                 None if minor == "*" else int(minor), access)


def device_rules(host: HostConfig, devices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if host.privileged:
        return [_rule(True, None, None, None, "rwm")]
    rules = [_rule(False, None, None, None, "rwm")]
    rules += [_rule(True, *r) for r in _DEFAULT_DEVICE_RULES]
    for dev in devices:
        access = str(dev.get("permissions") or "rwm")
        if not re.fullmatch(r"[rwm]{1,3}", access):
            raise InvalidArgument(f"bad mode specified: {access}")
        rules.append(_rule(True, str(dev["type"]), int(dev["major"]), int(dev["minor"]), access))
    rules += [parse_cgroup_rule(r) for r in host.device_cgroup_rules or ()]
    return rules


def linux_devices(devices: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The engine's ``--device`` entries as ``linux.devices`` nodes to create."""
    out = []
    for dev in devices:
        path = str(dev["path_in_container"])
        if not path.startswith("/"):
            raise InvalidArgument(f"bad format for path: {path}")
        if dev["type"] not in ("c", "b", "u", "p"):
            raise InvalidArgument(f"device {path}: invalid type {dev['type']!r}")
        node: dict[str, Any] = {"path": path, "type": dev["type"],
                                "major": int(dev["major"]), "minor": int(dev["minor"])}
        if dev.get("file_mode") is not None:
            node["fileMode"] = int(dev["file_mode"])
        node["uid"] = int(dev.get("uid") or 0)
        node["gid"] = int(dev.get("gid") or 0)
        out.append(node)
    return out


def _memory(host: HostConfig, cgroup_version: int) -> dict[str, Any]:
    mem: dict[str, Any] = {}
    if host.memory < 0 or host.memory_reservation < 0:
        raise InvalidArgument("invalid memory limit: it must not be negative")
    if host.memory:
        if host.memory < MIN_MEMORY:
            raise InvalidArgument("Minimum memory limit allowed is 6MB")
        mem["limit"] = host.memory
    if host.memory_reservation:
        if host.memory and host.memory < host.memory_reservation:
            raise InvalidArgument("Minimum memory limit can not be less than memory "
                                  "reservation limit, see usage")
        if host.memory_reservation < MIN_MEMORY:
            raise InvalidArgument("Minimum memory reservation allowed is 6MB")
        mem["reservation"] = host.memory_reservation
    swap = host.memory_swap
    if swap < -1:
        raise InvalidArgument(f"invalid memory swap limit {swap}")
    if swap > 0 and not host.memory:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap "
                              "limit, see usage")
    if swap > 0 and swap < host.memory:
        raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                              "see usage")
    if swap == 0 and host.memory:
        swap = 2 * host.memory  # Docker: as much swap as memory
    if swap:
        mem["swap"] = swap
    swappiness = host.memory_swappiness
    if swappiness is not None and swappiness != -1:
        if not 0 <= swappiness <= 100:
            raise InvalidArgument(f"Invalid value: {swappiness}, valid memory swappiness "
                                  "range is 0-100")
        if cgroup_version == 1:  # Docker ignores it on v2
            mem["swappiness"] = swappiness
    if host.oom_kill_disable and cgroup_version == 1:  # v2 has no such knob
        mem["disableOOMKiller"] = True
    return mem


def _cpu(host: HostConfig) -> dict[str, Any]:
    cpu: dict[str, Any] = {}
    if host.nano_cpus:
        if host.nano_cpus < 0:
            raise InvalidArgument("Range of CPUs must be positive")
        if host.cpu_period:
            raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period cannot both "
                                  "be set")
        if host.cpu_quota:
            raise InvalidArgument("Conflicting options: Nano CPUs and CPU Quota cannot both "
                                  "be set")
        period = 100000
        cpu["quota"] = host.nano_cpus * period // 1_000_000_000
        cpu["period"] = period
    if host.cpu_shares:
        if host.cpu_shares < 0:
            raise InvalidArgument(f"Invalid CPU shares ({host.cpu_shares}): value must be a "
                                  "positive integer")
        cpu["shares"] = host.cpu_shares
    if host.cpu_period:
        if not 1000 <= host.cpu_period <= 1000000:
            raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or "
                                  "larger than 1s (i.e. 1000000)")
        cpu["period"] = host.cpu_period
    if host.cpu_quota:
        if 0 < host.cpu_quota < 1000 or host.cpu_quota < -1:
            raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
        cpu["quota"] = host.cpu_quota
    rt_period, rt_runtime = host.cpu_realtime_period, host.cpu_realtime_runtime
    if rt_period and rt_runtime and rt_runtime > rt_period:
        raise InvalidArgument("cpu-rt-runtime cannot be higher than cpu-rt-period")
    if rt_period:
        cpu["realtimePeriod"] = rt_period
    if rt_runtime:
        cpu["realtimeRuntime"] = rt_runtime
    if host.cpuset_cpus:
        cpu["cpus"] = host.cpuset_cpus
    if host.cpuset_mems:
        cpu["mems"] = host.cpuset_mems
    return cpu


def _block_io(host: HostConfig,
              device_numbers: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    bio: dict[str, Any] = {}
    if host.blkio_weight:
        if not 10 <= host.blkio_weight <= 1000:
            raise InvalidArgument("Range of blkio weight is from 10 to 1000")
        bio["weight"] = host.blkio_weight

    def numbers(path: str) -> tuple[int, int]:
        if path not in device_numbers:
            raise InvalidArgument(f"block device {path}: the engine gave no device numbers")
        return device_numbers[path]

    weights = []
    for wd in host.blkio_weight_device or ():
        if not 10 <= wd.weight <= 1000:
            raise InvalidArgument(f"invalid weight for device {wd.path}: {wd.weight}; "
                                  "the range is from 10 to 1000")
        major, minor = numbers(wd.path)
        weights.append({"major": major, "minor": minor, "weight": wd.weight})
    if weights:
        bio["weightDevice"] = weights
    for key, items in (("throttleReadBpsDevice", host.blkio_device_read_bps),
                       ("throttleWriteBpsDevice", host.blkio_device_write_bps),
                       ("throttleReadIOPSDevice", host.blkio_device_read_iops),
                       ("throttleWriteIOPSDevice", host.blkio_device_write_iops)):
        rows = []
        for td in items or ():
            if td.rate < 0:
                raise InvalidArgument(f"invalid rate for device {td.path}: {td.rate}")
            major, minor = numbers(td.path)
            rows.append({"major": major, "minor": minor, "rate": td.rate})
        if rows:
            bio[key] = rows
    return bio


def resources(host: HostConfig, *, cgroup_version: int, devices: Sequence[Mapping[str, Any]],
              device_numbers: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": device_rules(host, devices)}
    if mem := _memory(host, cgroup_version):
        res["memory"] = mem
    if cpu := _cpu(host):
        res["cpu"] = cpu
    if host.pids_limit is not None and host.pids_limit > 0:
        res["pids"] = {"limit": host.pids_limit}
    if bio := _block_io(host, device_numbers):
        res["blockIO"] = bio
    return res


def rlimits(ulimits: Sequence[Ulimit]) -> list[dict[str, Any]]:
    """``--ulimit nofile=1024:2048`` → ``RLIMIT_NOFILE``; -1 is unlimited."""
    out: list[dict[str, Any]] = []
    for ul in ulimits:
        if ul.name not in ULIMIT_NAMES:
            raise InvalidArgument(f"invalid ulimit type: {ul.name}")
        soft = RLIM_INFINITY if ul.soft == -1 else ul.soft
        hard = RLIM_INFINITY if ul.hard == -1 else ul.hard
        if soft < 0 or hard < 0:
            raise InvalidArgument(f"invalid ulimit {ul.name}: negative value")
        if soft > hard:
            raise InvalidArgument("ulimit soft limit must be less than or equal to hard "
                                  f"limit: {ul.soft} > {ul.hard}")
        entry = {"type": "RLIMIT_" + ul.name.upper(), "hard": hard, "soft": soft}
        out = [e for e in out if e["type"] != entry["type"]] + [entry]
    return out
