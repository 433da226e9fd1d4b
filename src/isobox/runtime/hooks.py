"""OCI lifecycle hooks: the state JSON on stdin, a timeout, errors named."""

from __future__ import annotations

import os

from isobox.errors import IsoboxError
from isobox.linux.lazylog import get_logger
from isobox.oci.runtime_spec import Hook, State, encode

log = get_logger(__name__)


class HookFailed(IsoboxError):
    pass


def run_hooks(kind: str, hooks: list[Hook] | None, state: State, *, fatal: bool = True) -> None:
    """Run each hook in order; a failure stops the rest when fatal, else is
    logged as the spec asks for poststart and poststop."""
    payload = encode(state)
    for hook in hooks or ():
        try:
            run_hook(hook, payload)
        except HookFailed as exc:
            if fatal:
                raise HookFailed(f"{kind} hook: {exc}") from None
            log.warning("%s hook: %s", kind, exc)


def run_hook(hook: Hook, payload: bytes) -> None:
    # Imported here, not at the top: most containers have no hooks. A hook
    # run inside the container (startContainer) finds it already imported by
    # the init before pivot_root (see init.py).
    import subprocess

    argv = list(hook.args or [hook.path])
    env = dict(item.split("=", 1) for item in (hook.env or ()) if "=" in item)
    try:
        proc = subprocess.Popen(
            argv, executable=hook.path, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise HookFailed(f"{hook.path}: {exc.strerror}") from None
    try:
        out, _ = proc.communicate(payload, timeout=hook.timeout if hook.timeout else None)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()
        raise HookFailed(f"{hook.path} timed out after {hook.timeout}s") from None
    if proc.returncode != 0:
        detail = out.decode(errors="replace").strip().splitlines()
        suffix = f": {detail[-1]}" if detail else ""
        raise HookFailed(f"{hook.path} exited with status {proc.returncode}{suffix}")
