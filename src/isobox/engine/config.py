"""Engine configuration: built once in an entry point and passed down."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

from isobox.engine.defaults import (
    DEFAULT_ROOT,
    DEFAULT_RUN_ROOT,
    DEFAULT_SETTINGS_FILE,
    roots,
    settings_file,
)
from isobox.errors import InvalidArgument

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_RUN_ROOT",
    "DEFAULT_SETTINGS_FILE",
    "EngineConfig",
    "command_server_idle",
    "launcher_idle",
    "load_config",
]

SETTING_KEYS = ("default-isolation", "vm", "shim-launcher", "cli-server")
#: How long the CLI's warm shim launcher waits for the next launch before it
#: exits (seconds): ``{"shim-launcher": {"idle-timeout": N}}`` in the settings
#: file; 0 turns it off (each monitor a new interpreter), negative: never exits.
DEFAULT_LAUNCHER_IDLE = 600.0
#: The same for the CLI's command server (:mod:`isobox.engine.resident`):
#: ``{"cli-server": {"idle-timeout": N}}``; 0 turns it off (every command
#: runs in its own interpreter), negative: it never exits.
DEFAULT_COMMAND_SERVER_IDLE = 600.0


class EngineConfig(SimpleNamespace):
    """Where state lives and what the operator allowed.

    ``root`` holds persistent state (images, containers, volumes);
    ``run_root`` what dies with the host (sockets, runtime state). A custom
    ``--root`` (or ISOBOX_ROOT) puts both under it, so tests run isolated.
    """

    root: str
    run_root: str
    config_dir: str
    insecure_registries: list[str]
    #: The operator's settings file (Docker's daemon.json shape): ``default-isolation``
    #: (process|vm|hyperv) and ``vm`` ({kernel, initrd, accel, memory-mb, cpus, boot-timeout}).
    settings: dict[str, Any]
    settings_file: str
    #: A warm shim launcher's socket (isoboxd runs one; the CLI shares one per root), or None.
    shim_zygote: str | None = None
    #: The CLI's: start a detached launcher on ``shim_zygote`` when none answers
    #: there, which exits after this many idle seconds (negative: never). None: do not.
    shim_zygote_keep: float | None = None

    @property
    def content_dir(self) -> str:
        return os.path.join(self.root, "content")

    @property
    def images_db(self) -> str:
        return os.path.join(self.root, "images.db")

    @property
    def snapshots_dir(self) -> str:
        return os.path.join(self.root, "snapshots")

    @property
    def credentials_file(self) -> str:
        return os.path.join(self.config_dir, "config.json")

    @property
    def certs_dir(self) -> str:
        return os.path.join(self.config_dir, "certs.d")


def load_config(root: str | None = None, *, insecure_registries: list[str] | None = None,
                env: dict[str, str] | None = None) -> EngineConfig:
    env = dict(os.environ) if env is None else env
    root, run_root = roots(root, env)
    config_dir = env.get("ISOBOX_CONFIG") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".isobox")
    insecure = list(insecure_registries or [])
    insecure += [r for r in env.get("ISOBOX_INSECURE_REGISTRIES", "").split(",") if r]
    settings_path = settings_file(env)
    return EngineConfig(root=root, run_root=run_root, config_dir=config_dir,
                        insecure_registries=insecure, settings=_settings(settings_path),
                        settings_file=settings_path)


def _settings(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    try:
        settings = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise InvalidArgument(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise InvalidArgument(f"{path}: want a JSON object")
    unknown = set(settings) - set(SETTING_KEYS)
    if unknown:
        raise InvalidArgument(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    for key in ("shim-launcher", "cli-server"):
        server = settings.get(key, {})
        if not isinstance(server, dict) or set(server) - {"idle-timeout"} or not isinstance(
                server.get("idle-timeout", 0), (int, float)):
            raise InvalidArgument(f'{path}: "{key}": want {{"idle-timeout": SECONDS}}')
    return settings


def launcher_idle(config: EngineConfig) -> float:
    """The CLI's warm launcher's idle timeout (see DEFAULT_LAUNCHER_IDLE)."""
    return _idle_timeout(config, "shim-launcher", DEFAULT_LAUNCHER_IDLE)


def command_server_idle(config: EngineConfig) -> float:
    """The CLI's command server's idle timeout (see DEFAULT_COMMAND_SERVER_IDLE)."""
    return _idle_timeout(config, "cli-server", DEFAULT_COMMAND_SERVER_IDLE)


def _idle_timeout(config: EngineConfig, key: str, default: float) -> float:
    """``{key: {"idle-timeout": N}}`` of the settings file (checked by _settings)."""
    server = config.settings.get(key) or {}
    return float(server.get("idle-timeout", default))
