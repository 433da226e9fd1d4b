"""Whether the kernel's OOM killer struck in a container's memory cgroup.

Read before the runtime deletes the container (and its cgroup). The path
comes from the bundle's ``linux.cgroupsPath`` as runc reads it on the
cgroupfs driver: absolute or relative to the root; ``slice:prefix:name``
(the systemd driver's syntax) names ``/slice/prefix-name.scope``.
"""

from __future__ import annotations

import json
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_path(config_json: str, container_id: str) -> str:
    try:
        with open(config_json, "rb") as f:
            spec = json.loads(f.read())
        path = (spec.get("linux") or {}).get("cgroupsPath") or ""
    except (OSError, ValueError, AttributeError):
        path = ""
    if not isinstance(path, str) or not path:
        return f"/{container_id}"
    if path.count(":") == 2 and not path.startswith("/"):
        slice_, prefix, name = path.split(":")
        return f"/{slice_ or 'system.slice'}/{prefix}-{name}.scope"
    return path if path.startswith("/") else "/" + path


def oom_kills(cgroup: str, root: str = CGROUP_ROOT) -> int:
    """The cgroup's oom_kill counter (v1 memory.oom_control, v2 memory.events); 0 if unknown."""
    rel = cgroup.strip("/")
    v1 = os.path.join(root, "memory")
    if os.path.isdir(v1):
        candidates = [os.path.join(v1, rel, "memory.oom_control")]
    else:
        candidates = [os.path.join(root, rel, "memory.events")]
    for path in candidates:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0
