"""``isobox info``: what this host offers to containers."""

from __future__ import annotations

import platform
import shutil
from typing import Any

from isobox import __version__
from isobox.engine.config import EngineConfig


def host_facts(config: EngineConfig) -> dict[str, Any]:
    from isobox.cgroups import detect_version
    from isobox.engine import vmhost

    return {
        "Version": __version__,
        "Kernel": platform.release(),
        "CgroupVersion": str(detect_version()),
        "Root": config.root,
        "Runtimes": {
            name: path for name in ("isobox-runtime", "runc", "crun", "runsc")
            if (path := shutil.which(name))
        },
        "DefaultIsolation": _default_isolation(config),
        "VM": vmhost.facts(config),
    }


def _default_isolation(config: EngineConfig) -> str:
    from isobox.engine.vmspec import isolation_of

    return isolation_of("", str(config.settings.get("default-isolation") or ""))
