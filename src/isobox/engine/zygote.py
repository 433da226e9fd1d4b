"""The warm shim launcher a long-lived engine user (isoboxd) keeps: see
:mod:`isobox.shim.zygote`. ``start`` runs it and points the config at it;
the engine's launches go through it and fall back to a plain start when it
does not answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from isobox.engine.config import EngineConfig
from isobox.errors import Unavailable

READY_TIMEOUT = 30.0


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
