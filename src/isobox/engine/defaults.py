"""Where isobox keeps its state unless told otherwise, and how a root and
the environment name it. A module of its own, importing nothing but os,
so that the CLI's thin front end can find its root's command server
before it imports anything else; the engine's configuration uses the same
rules."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # collections.abc would cost the front end ~2 ms; mypy reads True
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_ROOT = "/var/lib/isobox"
DEFAULT_RUN_ROOT = "/run/isobox"
DEFAULT_SETTINGS_FILE = "/etc/isobox/daemon.json"


def roots(root: str | None, env: Mapping[str, str]) -> tuple[str, str]:
    """(state root, run root): ``root`` (``--root``), else ISOBOX_ROOT, holds
    both; else the defaults."""
    root = root or env.get("ISOBOX_ROOT")
    if root:
        root = os.path.abspath(root)
        return root, os.path.join(root, "run")
    return DEFAULT_ROOT, DEFAULT_RUN_ROOT


def settings_file(env: Mapping[str, str]) -> str:
    return env.get("ISOBOX_DAEMON_CONFIG") or DEFAULT_SETTINGS_FILE
