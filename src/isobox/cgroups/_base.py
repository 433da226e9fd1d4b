"""Hierarchy discovery and path checks (the interfaces are in ``_protocols.py``)."""

from __future__ import annotations

import os

from isobox.errors import InvalidArgument, Unavailable

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.cgroups._protocols import Controller
    from isobox.oci.runtime_spec import Resources

#: Mount options of a cgroup v1 mount that are not controller names.
_NOT_CONTROLLERS = frozenset({
    "rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
    "favordynmods", "nofavordynmods", "all", "none",
})


class Hierarchy:
    """A mounted cgroup hierarchy, as /proc/self/mountinfo shows it.

    (A plain class: dataclasses and typing.NamedTuple cost more to import than
    the rest of this package, and this runs on every container start.)
    """

    __slots__ = ("controllers", "mountpoint", "root", "version")

    def __init__(self, mountpoint: str, controllers: list[str], version: int = 1,
                 root: str = "/") -> None:
        self.mountpoint = mountpoint
        #: v1: the controllers, e.g. ["cpu"], ["cpu", "cpuacct"], ["name=systemd"]; v2: [].
        self.controllers = controllers
        self.version = version
        #: The directory of the hierarchy that is mounted ("/" unless a sub-tree is).
        self.root = root

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Hierarchy):
            return NotImplemented
        return (self.mountpoint, self.controllers, self.version, self.root) == (
            other.mountpoint, other.controllers, other.version, other.root)

    def __repr__(self) -> str:
        return (f"Hierarchy({self.mountpoint!r}, {self.controllers!r}, {self.version}, "
                f"{self.root!r})")

    @property
    def name(self) -> str:
        """The key used by host_paths(): "cpu,cpuacct", "name=systemd", or "" for v2."""
        return ",".join(self.controllers)


def _unescape(field_: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field_):
        octal = field_[i + 1:i + 4]
        if field_[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """The cgroup hierarchies in a mountinfo text: v1 mounts first, then cgroup2."""
    v1: dict[str, Hierarchy] = {}
    v2: list[Hierarchy] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            fstype, superopts = fields[sep + 1], fields[sep + 3]
            root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        except (ValueError, IndexError):
            continue
        if fstype == "cgroup2":
            if not any(h.mountpoint == mountpoint for h in v2):
                v2.append(Hierarchy(mountpoint, [], 2, root))
        elif fstype == "cgroup":
            ctrls = [o for o in superopts.split(",")
                     if o not in _NOT_CONTROLLERS and not o.startswith("release_agent=")]
            if not ctrls:
                continue
            hier = Hierarchy(mountpoint, ctrls, 1, root)
            seen = v1.get(hier.name)
            # The same hierarchy may be mounted twice: prefer the mount of its root.
            if seen is None or (seen.root != "/" and root == "/"):
                v1[hier.name] = hier
    return [*v1.values(), *v2]


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[Hierarchy]:
    """Every mounted cgroup hierarchy: v1 mounts, and the cgroup2 mount if any."""
    # os.read, not open(): a text file object costs more than the parse here.
    chunks = []
    try:
        fd = os.open(mountinfo, os.O_RDONLY | os.O_CLOEXEC)
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        raise Unavailable(f"cannot read {mountinfo}: {os.strerror(exc.errno or 0)}") from exc
    return parse_mountinfo(b"".join(chunks).decode("utf-8", "surrogateescape"))


def normalize_path(path: str) -> str:
    """A cgroup path as "/a/b"; relative paths start at "/"; ".." is refused."""
    if "\0" in path:
        raise InvalidArgument(f"cgroup path {path!r} contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"cgroup path {path!r} must not contain '..'")
    if not parts:
        raise InvalidArgument(f"cgroup path {path!r} must name a cgroup below the root")
    return "/" + "/".join(parts)


def join(mountpoint: str, path: str) -> str:
    """The host directory of cgroup ``path`` (normalized) in a hierarchy."""
    return os.path.join(mountpoint, path.lstrip("/"))


def merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Deep-merge one controller's partial stats into the whole."""
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def require(controllers: list[Controller], available: set[str], resources: Resources,
            where: str) -> None:
    """Unavailable when ``resources`` asks for a controller this cgroup lacks."""
    missing = [c.NAME for c in controllers if c.NAME not in available and c.wants(resources)]
    if missing:
        raise Unavailable(f"cgroup controller(s) {', '.join(missing)} not available {where}, "
                          "but the resources ask for them")
