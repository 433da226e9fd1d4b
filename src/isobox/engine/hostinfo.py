"""``isobox info``: what this host offers to containers."""

from __future__ import annotations

import platform
import shutil
from typing import Any

from isobox import __version__
from isobox.engine.config import EngineConfig


def host_facts(config: EngineConfig) -> dict[str, Any]:
    from isobox.cgroups import detect_version

    return {
        "Version": __version__,
        "Kernel": platform.release(),
        "CgroupVersion": str(detect_version()),
        "Root": config.root,
        "Runtimes": {
            name: path for name in ("isobox-runtime", "runc", "crun", "runsc")
            if (path := shutil.which(name))
        },
        "DefaultIsolation": "process",
    }
