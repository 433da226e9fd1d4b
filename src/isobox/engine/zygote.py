"""The warm shim launchers (see :mod:`isobox.shim.zygote`).

``start`` runs isoboxd's, a child of the daemon, and points the config at
it. ``use_shared`` points a CLI's config at its root's shared, detached one
(``<run root>/shim-zygote.sock``), which the first launch that finds none
answering starts in the background. Launches go through the launcher and
fall back to a plain start when it does not answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from isobox.engine.config import EngineConfig, launcher_idle
from isobox.errors import Unavailable

READY_TIMEOUT = 30.0
SHARED = "shim-zygote.sock"


def shared_socket(config: EngineConfig) -> str:
    """The socket of a root's shared launcher (``.pid``, ``.lock``, ``.log`` beside it)."""
    return os.path.join(config.run_root, SHARED)


def use_shared(config: EngineConfig) -> None:
    """Launch this process's monitors through the root's shared launcher,
    started on first use; nothing when the settings turn it off."""
    idle = launcher_idle(config)
    if idle == 0:
        return
    config.shim_zygote = shared_socket(config)
    config.shim_zygote_keep = idle


def shared_pid(config: EngineConfig) -> int | None:
    """The pid of the root's shared launcher, if one is running."""
    try:
        with open(os.path.join(config.run_root, "shim-zygote.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if os.fsencode(shared_socket(config)) in argv else None


def _die_with_parent() -> None:
    from isobox.linux import identity

    identity.set_parent_death_signal(signal.SIGKILL)  # no launcher outlives its daemon


def start(config: EngineConfig) -> subprocess.Popen[bytes]:
    """Run the launcher (call before any thread starts); config.shim_zygote set."""
    os.makedirs(config.run_root, mode=0o700, exist_ok=True)
    path = os.path.join(config.run_root, f"zygote-{os.getpid()}.sock")
    proc = subprocess.Popen([sys.executable, "-I", "-m", "isobox.shim.zygote", path],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            preexec_fn=_die_with_parent, cwd="/",
                            env={"PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready" once it listens (or EOF if it died)
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        proc.wait()
        raise Unavailable("the shim launcher did not start")
    config.shim_zygote = path
    return proc


def stop(config: EngineConfig, proc: subprocess.Popen[bytes]) -> None:
    config.shim_zygote = None
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    try:
        os.unlink(os.path.join(config.run_root, f"zygote-{os.getpid()}.sock"))
    except FileNotFoundError:
        pass
