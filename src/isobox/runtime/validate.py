"""Checks on a config.json that a runtime must make before touching anything."""

from __future__ import annotations

import os

from isobox.errors import InvalidArgument
from isobox.linux import capabilities, identity, mounts, namespaces
from isobox.oci.runtime_spec import Process, Spec

_IPC_SYSCTLS = {
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
}


def namespace_map(spec: Spec) -> dict[str, str | None]:
    """OCI namespace type -> path to join (None: create a new one)."""
    found: dict[str, str | None] = {}
    for ns in (spec.linux.namespaces if spec.linux else None) or ():
        if ns.type not in namespaces.KINDS:
            raise InvalidArgument(f"unknown namespace type {ns.type!r}")
        if ns.type in found:
            raise InvalidArgument(f"namespace {ns.type!r} is listed twice")
        if ns.path is not None and not os.path.isabs(ns.path):
            raise InvalidArgument(f"namespace {ns.type} path {ns.path!r} is not absolute")
        found[ns.type] = ns.path or None
    return found


def validate_process(process: Process | None, last_cap: int) -> Process:
    if process is None:
        raise InvalidArgument("config.json has no process")
    if not process.args:
        raise InvalidArgument("process.args must not be empty")
    if not os.path.isabs(process.cwd):
        raise InvalidArgument(f"process.cwd {process.cwd!r} is not an absolute path")
    caps = process.capabilities
    if caps is not None:
        for field in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            try:
                capabilities.parse(getattr(caps, field), last_cap)
            except ValueError as exc:
                raise InvalidArgument(f"process.capabilities.{field}: {exc}") from None
    for rl in process.rlimits or ():
        if rl.type not in identity.RLIMITS:
            raise InvalidArgument(f"unknown rlimit type {rl.type!r}")
        if rl.soft > rl.hard and rl.hard >= 0:
            raise InvalidArgument(f"rlimit {rl.type}: soft limit {rl.soft} exceeds hard {rl.hard}")
    return process


def validate_spec(spec: Spec, bundle: str, last_cap: int) -> str:
    """Validate and return the absolute rootfs path."""
    if spec.root is None or not spec.root.path:
        raise InvalidArgument("config.json has no root.path")
    rootfs = spec.root.path
    if not os.path.isabs(rootfs):
        rootfs = os.path.join(bundle, rootfs)
    if not os.path.isdir(rootfs):
        raise InvalidArgument(f"rootfs {rootfs} does not exist or is not a directory")
    validate_process(spec.process, last_cap)
    ns = namespace_map(spec)
    if "mount" not in ns:
        raise InvalidArgument("a mount namespace is required (linux.namespaces has no 'mount')")
    if "user" in ns and ns["user"] is None:
        linux = spec.linux
        if linux is None or not linux.uid_mappings or not linux.gid_mappings:
            raise InvalidArgument("a new user namespace needs linux.uidMappings and gidMappings")
    if spec.hostname and "uts" not in ns:
        raise InvalidArgument("unable to set hostname without a private UTS namespace")
    if spec.domainname and "uts" not in ns:
        raise InvalidArgument("unable to set domainname without a private UTS namespace")
    linux = spec.linux
    for key in (linux.sysctl if linux else None) or {}:
        _check_sysctl(key, ns)
    for m in spec.mounts or ():
        if not m.destination:
            raise InvalidArgument("a mount has an empty destination")
        if ".." in m.destination.split("/") and not os.path.isabs(m.destination):
            raise InvalidArgument(f"mount destination {m.destination!r} climbs out of the rootfs")
        opts = mounts.MountOptions(m.options)
        if (opts.is_bind or m.type == "bind") and not m.source:
            raise InvalidArgument(f"bind mount to {m.destination} has no source")
    if linux and linux.rootfs_propagation and linux.rootfs_propagation not in mounts.PROPAGATION:
        raise InvalidArgument(f"invalid rootfsPropagation {linux.rootfs_propagation!r}")
    for kind, hooks in _all_hooks(spec):
        for hook in hooks:
            if not os.path.isabs(hook.path):
                raise InvalidArgument(f"{kind} hook path {hook.path!r} is not absolute")
            if hook.timeout is not None and hook.timeout <= 0:
                raise InvalidArgument(f"{kind} hook timeout must be positive")
    return rootfs


def _all_hooks(spec: Spec):  # type: ignore[no-untyped-def]
    if spec.hooks is None:
        return
    for kind in ("prestart", "create_runtime", "create_container", "start_container",
                 "poststart", "poststop"):
        yield kind, getattr(spec.hooks, kind) or []


def _check_sysctl(key: str, ns: dict[str, str | None]) -> None:
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if "ipc" not in ns:
            raise InvalidArgument(f"sysctl {key!r} needs a private IPC namespace")
        return
    if key.startswith("net."):
        if "network" not in ns:
            raise InvalidArgument(f"sysctl {key!r} needs a private network namespace")
        return
    if key in ("kernel.hostname", "kernel.domainname"):
        if "uts" not in ns:
            raise InvalidArgument(f"sysctl {key!r} needs a private UTS namespace")
        return
    raise InvalidArgument(f"sysctl {key!r} is not in a separate kernel namespace")
