"""The runtime's view of cgroups: where a container's cgroup lives."""

from __future__ import annotations

import os

from isobox import cgroups
from isobox.errors import InvalidArgument
from isobox.oci.runtime_spec import DeviceCgroup, Resources, Spec
from isobox.oci.struct import replace

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.runtime.rootfs import CgroupSource
    from isobox.runtime.state import Record


def cgroup_path(container_id: str, cgroups_path: str | None, systemd: bool = False) -> str:
    """The cgroup path for a container, as runc interprets cgroupsPath.

    ``slice:prefix:name`` (systemd driver syntax) maps to
    ``/slice/prefix-name.scope`` on the cgroupfs driver; no path means
    ``/isobox/<id>``.
    """
    if not cgroups_path:
        return f"/isobox/{container_id}"
    if systemd or (cgroups_path.count(":") == 2 and not cgroups_path.startswith("/")):
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise InvalidArgument(f"invalid systemd cgroupsPath {cgroups_path!r}")
        slice_, prefix, name = parts
        return f"/{slice_ or 'system.slice'}/{prefix}-{name}.scope"
    if ".." in cgroups_path.split("/"):
        raise InvalidArgument(f"cgroupsPath {cgroups_path!r} must not contain '..'")
    return cgroups_path if cgroups_path.startswith("/") else "/" + cgroups_path


def manager_for(record: Record) -> cgroups.Manager:
    return cgroups.new_manager(record.cgroup_path)


def fork_in(manager: cgroups.Manager) -> tuple[int, bool]:
    """Fork a child that is to join ``manager``'s cgroup with
    ``manager.enter(cgroup2=not in_cgroup2)`` before anything else.

    Returns (pid, in_cgroup2), pid 0 in the child. The child starts in the
    cgroup2 directory (in_cgroup2) when the kernel can clone into it; the
    cgroup v1 hierarchies it joins itself, moving its own thread, which is
    the way around the kernel's slow global lock (see ``enter``)."""
    path = manager.cgroup2_dir()
    if path is not None:
        # Here, not at the top: ctypes, which start, kill and delete never need.
        from isobox.linux import namespaces

        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            fd = -1  # enter() reports it
        if fd >= 0:
            try:
                if namespaces.single_threaded():
                    return namespaces.fork_into_cgroup(fd), True
            except OSError:
                pass  # an older kernel: fork, and the child writes cgroup.procs
            finally:
                os.close(fd)
    return os.fork(), False


def cgroup_sources(manager: cgroups.Manager) -> list[CgroupSource]:
    """How each hierarchy appears at the container's /sys/fs/cgroup."""
    # Here, not at the top: rootfs pulls in ctypes, which start, kill and
    # delete never need.
    from isobox.runtime.rootfs import CgroupSource

    paths = manager.host_paths()
    if manager.version == 2:
        return [CgroupSource(subdir="", fstype="cgroup2", data="", host_path=paths.get("", ""),
                             aliases=())]
    sources = []
    for h in cgroups.hierarchies():
        if h.version == 2:
            if "" in paths:
                sources.append(CgroupSource(subdir="unified", fstype="cgroup2", data="", aliases=(),
                                            host_path=paths[""]))
            continue
        if h.name not in paths:
            continue
        subdir = os.path.basename(h.mountpoint.rstrip("/"))
        data = ",".join(h.controllers)
        if data.startswith("name="):
            data = "none," + data
        aliases = tuple(c for c in h.controllers
                        if "," in subdir and c != subdir and not c.startswith("name="))
        sources.append(CgroupSource(subdir=subdir, fstype="cgroup", data=data,
                                    host_path=paths[h.name], aliases=aliases))
    return sources


# Devices every container may use whatever the config says, as runc allows
# them: mknod of anything (the node is useless without r/w access), the
# standard nodes, ptys.
_ALWAYS_ALLOWED = (
    ("c", None, None, "m"), ("b", None, None, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"),
    ("c", 1, 5, "rwm"), ("c", 1, 9, "rwm"), ("c", 136, None, "rwm"), ("c", 5, 2, "rwm"),
    ("c", 5, 1, "rwm"),
)


def effective_resources(spec: Spec) -> Resources | None:
    """The config's resources plus the device rules runc always adds."""
    linux = spec.linux
    if linux is None:
        return None
    resources = linux.resources
    if resources is None or resources.devices is None:
        return resources
    rules = list(resources.devices)
    # An allow rule already in force (given after the last deny) is not
    # written again: engines such as ours send runc's list themselves.
    in_force: set[tuple[str | None, int | None, int | None, str]] = set()
    for rule in rules:
        if rule.allow:
            in_force.add(_rule_key(rule.type, rule.major, rule.minor, rule.access))
        else:
            in_force.clear()
    extra = [(t, ma, mi, acc) for t, ma, mi, acc in _ALWAYS_ALLOWED]
    extra += [("c" if dev.type == "u" else dev.type, dev.major, dev.minor, "rwm")
              for dev in linux.devices or ()]
    for t, ma, mi, acc in extra:
        key = _rule_key(t, ma, mi, acc)
        if key not in in_force:
            in_force.add(key)
            rules.append(DeviceCgroup(allow=True, type=t, major=ma, minor=mi, access=acc))
    updated: Resources = replace(resources, devices=rules)
    return updated


def _rule_key(kind: str | None, major: int | None, minor: int | None, access: str | None
              ) -> tuple[str | None, int | None, int | None, str]:
    wild = (None if major is None or major < 0 else major,
            None if minor is None or minor < 0 else minor)
    return (kind or "a", *wild, "".join(sorted(access or "rwm")))
