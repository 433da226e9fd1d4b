"""VM isolation, the engine's part: turn a container's process spec into the
guest's, and decide the utility VM (kernel, initramfs, accelerator, size,
disks, shares) written as the ``vm`` section of ``shim.json``.

Inside the guest the agent mounts the image's layers (one read-only erofs
disk per layer, made once and cached by the layer's snapshot id) under an
overlay whose upper layer is the container's own ext4 disk
(``D/upper.ext4``, kept across stop and start), and 9p shares for volumes,
bind mounts (a bound file through a hard link in a directory of its own)
and the hosts/hostname/resolv.conf files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import TYPE_CHECKING, Any

from isobox.errors import InvalidArgument

if TYPE_CHECKING:
    from isobox.engine.api_types import CreateRequest
    from isobox.engine.config import EngineConfig
    from isobox.engine.container_store import ContainerRecord
    from isobox.engine.containers import ContainerService
    from isobox.images.snapshots import Mount

GUEST_ROOTFS = "/run/isobox/rootfs"
GUEST_SHARES = "/run/isobox/shares"
FILES_SHARE = "files"  #: D/guest-files: hostname, hosts, resolv.conf
FILES_DIR = "guest-files"
FILE_BINDS_DIR = "file-binds"  #: D/file-binds/<tag>/<name>: a hard link of a bound file
UPPER_DISK = "upper.ext4"
UPPER_SIZE = 16 << 30  # sparse: costs only what the container writes
DEFAULT_MEMORY_MB = 256
MEMORY_OVERHEAD_MB = 96  # guest kernel, agent and page cache around the container's limit
BOOT_TIMEOUT = 60.0
CONTAINER_FILES = ("hostname", "hosts", "resolv.conf")
VM_CONFIG_KEYS = ("kernel", "initrd", "modules", "accel", "memory-mb", "cpus", "boot-timeout",
                  "templates")


def isolation_of(requested: str, default: str) -> str:
    """``vm`` or ``process`` for the --isolation value (hyperv = vm)."""
    value = (requested or "default").lower()
    if value == "default":
        value = (default or "process").lower()
    if value == "hyperv":
        value = "vm"
    if value not in ("process", "vm"):
        raise InvalidArgument(f"invalid isolation {requested or default!r}: want process, vm "
                              "or hyperv")
    return value


def vm_options(service: ContainerService) -> dict[str, Any]:
    options = service.config.settings.get("vm") or {}
    if not isinstance(options, dict):
        raise InvalidArgument("config: vm must be an object")
    unknown = set(options) - set(VM_CONFIG_KEYS)
    if unknown:
        raise InvalidArgument(f"config: unknown vm setting(s): {', '.join(sorted(unknown))}")
    return options


def guest_kernel(service: ContainerService) -> Any:
    from isobox.vm import kernel

    options = vm_options(service)
    return kernel.find(service.config.root, options.get("kernel"), options.get("initrd"))


def accelerator(service: ContainerService, guest: Any) -> tuple[str, str]:
    """(accel, reason): the configured one, or the cached probe's choice."""
    from isobox.vm import accel

    forced = vm_options(service).get("accel") or "auto"
    if forced in ("kvm", "tcg"):
        return forced, f"{forced} (set in the configuration)"
    choice = accel.choose(service.config.root, guest)
    return choice.accel, choice.reason


def prepare(service: ContainerService, record: ContainerRecord, create: CreateRequest,
            spec: dict[str, Any], mounts: list[Mount]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(guest spec, vm settings) for a VM-isolated container."""
    from isobox.vm import disks, initramfs

    d = service.dir(record.id)
    host = create.host_config
    if host.network_mode == "host":
        raise InvalidArgument("a VM-isolated container cannot use the host's network stack "
                              "(--network host): use a bridge network")
    if host.devices:
        raise InvalidArgument("--device is not supported with VM isolation: the VM has its "
                              "own devices")
    guest = guest_kernel(service)
    initrd = guest.initrd_override or initramfs.ensure(service.config.root, guest)
    accel, _ = accelerator(service, guest)
    options = vm_options(service)

    layer_disks = []
    for index, lower in enumerate(_lower_dirs(mounts)):  # bottom first
        real = os.path.realpath(lower)
        key = _layer_key(real)
        layer_disks.append({"path": disks.layer_image(service.config.root, real, key),
                            "serial": f"l{index}", "readonly": True, "fstype": "erofs",
                            "role": "layer"})
    vm_disks = list(layer_disks)
    ephemeral = bool(host.auto_remove)  # --rm: the writable layer can live in guest memory
    if not ephemeral:
        upper = os.path.join(d, UPPER_DISK)
        if not os.path.exists(upper):
            disks.create_writable(upper, UPPER_SIZE)
        vm_disks.append({"path": upper, "serial": "upper", "readonly": False,
                         "fstype": "ext4", "role": "upper"})

    guest_spec, shares, sysctls = _guest_spec(spec, d)
    memory_mb = _default_memory_mb(options)
    if host.memory:
        memory_mb = max(memory_mb, -(-host.memory // (1 << 20)) + MEMORY_OVERHEAD_MB)
    cpus = _default_cpus(options)
    if host.nano_cpus:
        cpus = max(1, min(os.cpu_count() or 1, -(-host.nano_cpus // 1_000_000_000)))
    vm = {
        "kernel": guest.kernel, "initrd": initrd, "accel": accel,
        "memory_mb": memory_mb, "cpus": cpus,
        "boot_timeout": float(options.get("boot-timeout") or BOOT_TIMEOUT),
        "console_log": os.path.join(d, "vm-console.log"),
        "hostname": create.hostname or record.id[:12],
        "disks": vm_disks, "shares": shares, "nics": [], "sysctls": sysctls,
        "ephemeral": ephemeral,
        "templates": templates_dir(service.config, guest),
    }
    return guest_spec, vm


def _default_memory_mb(options: dict[str, Any]) -> int:
    return int(options.get("memory-mb") or DEFAULT_MEMORY_MB)


def _default_cpus(options: dict[str, Any]) -> int:
    return int(options.get("cpus") or 1)


def templates_dir(config: EngineConfig, guest: Any) -> str | None:
    """Where VM templates live: VMs are restored from a saved VM instead of
    booted (isobox.vm.template), unless turned off or the initramfs is the
    user's (it may lack the SCSI drivers)."""
    from isobox.vm import kernel

    options = config.settings.get("vm") or {}
    if options.get("templates", True) is False or guest.initrd_override:
        return None
    return os.path.join(kernel.vm_dir(config.root), "templates")


def default_template_shapes(config: EngineConfig, guest: Any, initrd: str,
                            accel: str) -> list[Any]:
    """The template shapes of containers without --memory or --cpus: with
    and without a NIC (``vm setup`` makes them, so no first start waits).
    Read, as the keeper reads them, from the settings such a container gets."""
    from isobox.vm import template
    from isobox.vm.settings import VmSettings

    directory = templates_dir(config, guest)
    if directory is None:
        return []
    options = config.settings.get("vm") or {}
    base = {"kernel": guest.kernel, "initrd": initrd, "accel": accel,
            "memory_mb": _default_memory_mb(options), "cpus": _default_cpus(options),
            "templates": directory, "shares": [_files_share("")]}
    nic = {"tap": "", "mac": "", "address": ""}  # any NIC: the shape only counts them
    shapes = [template.shape_of(VmSettings({**base, "nics": nics})) for nics in ([], [nic])]
    return [shape for shape in shapes if shape is not None]


def _files_share(d: str) -> dict[str, Any]:
    """The share of hostname, hosts and resolv.conf (every VM container has it)."""
    return {"tag": FILES_SHARE, "path": os.path.join(d, FILES_DIR) if d else "",
            "readonly": True}


def _lower_dirs(mounts: list[Mount]) -> list[str]:
    """The image's layer directories, bottom first."""
    for m in mounts:
        if m.type != "overlay":
            continue
        for option in m.options:
            key, _, value = option.partition("=")
            if key == "lowerdir":
                return list(reversed(value.split(":")))
    return []


def _layer_key(real: str) -> str:
    """The snapshot's id (``.../snapshots/<id>/fs``), or a digest of the path."""
    parent, leaf = os.path.split(real)
    if leaf == "fs" and os.path.basename(parent):
        return os.path.basename(parent)
    return hashlib.sha256(real.encode()).hexdigest()


def _guest_spec(spec: dict[str, Any], d: str) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                      dict[str, str]]:
    """The spec as the guest sees it, the host directories to share, and the
    net.* sysctls the agent sets on the guest's network stack (which the
    container uses as its own: it has no network namespace in the guest)."""
    guest = dict(spec)
    guest["root"] = {**spec.get("root", {}), "path": GUEST_ROOTFS}
    guest.pop("hooks", None)  # host programs: nothing to run in the guest
    linux = dict(guest.get("linux") or {})
    linux.pop("devices", None)
    namespaces = []
    for ns in linux.get("namespaces") or []:
        if ns.get("path"):
            raise InvalidArgument(f"a VM-isolated container cannot join the host's "
                                  f"{ns.get('type')} namespace")
        if ns.get("type") == "network":
            continue  # the container uses the guest's network stack, the VM's NIC
        namespaces.append(ns)
    linux["namespaces"] = namespaces
    sysctl = dict(linux.get("sysctl") or {})
    net_sysctls = {k: str(v) for k, v in sysctl.items() if k.startswith("net.")}
    linux["sysctl"] = {k: v for k, v in sysctl.items() if not k.startswith("net.")}
    guest["linux"] = linux
    shares: list[dict[str, Any]] = [_files_share(d)]
    guest_mounts = []
    for m in spec.get("mounts") or []:
        source = m.get("source") or ""
        if m.get("type") != "bind" or not source.startswith("/"):
            guest_mounts.append(m)
            continue
        if os.path.dirname(source) == d and os.path.basename(source) in CONTAINER_FILES:
            guest_mounts.append({**m, "source": f"{GUEST_SHARES}/{FILES_SHARE}/"
                                                f"{os.path.basename(source)}"})
            continue
        tag = f"s{len(shares)}"
        options = m.get("options") or []
        if os.path.isdir(source):
            shared, inside = source, ""
        elif os.path.isfile(source):
            shared, inside = _file_share(d, tag, source)
        else:
            raise InvalidArgument(f"bind mount of {source}: VM isolation shares directories "
                                  "and regular files only")
        shares.append({"tag": tag, "path": shared, "readonly": "ro" in options})
        guest_mounts.append({**m, "source": f"{GUEST_SHARES}/{tag}{inside}"})
    guest["mounts"] = guest_mounts
    return guest, shares, net_sysctls


def _file_share(d: str, tag: str, source: str) -> tuple[str, str]:
    """(directory to share, path of the file in it) for a bind of one file.

    9p shares directories: the file is hard-linked into a directory of its
    own under the container's (the same inode, so writes on either side
    show on the other, as through a bind mount), so the guest sees no
    sibling of it; across file systems, where no link can be made, its
    directory is shared (the container still gets only the file)."""
    name = os.path.basename(source)
    stage = os.path.join(d, FILE_BINDS_DIR, tag)
    os.makedirs(stage, mode=0o700, exist_ok=True)
    link = os.path.join(stage, name)
    if os.path.lexists(link):
        os.unlink(link)  # an earlier create's: the source may have been replaced since
    try:
        os.link(source, link)
    except OSError:
        os.rmdir(stage)
        return os.path.dirname(source), f"/{name}"
    return stage, f"/{name}"


def refresh_files(d: str) -> None:
    """Copy hostname, hosts and resolv.conf (rewritten by networking at each
    start) into the directory the guest sees."""
    target = os.path.join(d, FILES_DIR)
    os.makedirs(target, mode=0o755, exist_ok=True)
    for name in CONTAINER_FILES:
        source = os.path.join(d, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(target, name))
