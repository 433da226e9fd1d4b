"""The contract between the engine and the per-container shim.

One shim process monitors one container. It outlives the CLI (and the
daemon) that launched it: it is the container init's parent (a child
subreaper), owns the container's stdio, writes its json-file log, records its
exit, applies the restart policy and serves requests on a unix socket.

Container directory ``D`` (the engine makes it; the shim only adds files)
-----------------------------------------------------------------------

=====================  ========================================================
``bundle/config.json``  the OCI spec; ``root.path`` is ``D/bundle/rootfs``
``bundle/rootfs/``      an empty directory; the shim mounts ``rootfs_mounts``
                        on it (and unmounts them when done for good)
``shim.json``           the shim's configuration (below), written by the engine
``shim.log``            the shim's own stderr (the engine opens it)
``shim.pid``            the shim's pid, written as soon as it runs
``state.json``          the container's state, replaced atomically on every
                        change (below)
``shim.sock``           the request socket (unix stream, mode 0600); removed
                        when the shim is done
``init.pid``            the init's host pid, written by the runtime's create
``<id>-json.log``       the container's output in Docker's json-file format
                        (``log_path``; ``.1``, ``.2``... after rotation)
``runtime-log.json``    an external runtime's ``--log`` (its error messages)
``console.sock``        an external runtime's ``--console-socket`` (tty only,
                        during create)
=====================  ========================================================

``shim.json``::

    {"id": str, "bundle": "D/bundle",
     "rootfs_mounts": [{"type": "overlay"|"bind", "source": str, "options": [str]}],
     "runtime": "isobox-runtime" | "/abs/path/of/runc-compatible",
     "runtime_root": str, "tty": bool, "open_stdin": bool, "stdin_once": bool,
     "log_path": "D/<id>-json.log", "log_max_size": int (bytes, 0: no rotation),
     "log_max_file": int,
     "restart": {"name": "no"|"on-failure"|"always"|"unless-stopped", "max_retries": int},
     "stop_signal": int, "stop_timeout": int (seconds; < 0: wait for ever),
     "vm": null | {...} (VM isolation: see isobox.vm.settings),
     "restart_hook": [argv] (run after a restart's create, before its start,
     with ISOBOX_INIT_PID; a failure ends the restart),
     "exit_command": [argv] (run detached once the container is done for good)}

With ``vm`` set the runtime is the VM keeper (isobox.vm.runtime): the
container runs in a utility VM, ``rootfs_mounts`` is empty and
``bundle/config.json`` is already the guest's spec.

``runtime: "isobox-runtime"`` runs the built-in runtime in this process (a
fork of the shim calls :func:`isobox.runtime.create.create`: no Python
start-up); any other value is the absolute path of a runc-compatible binary,
driven as ``<bin> --root <runtime_root> --log D/runtime-log.json --log-format
json create --bundle <bundle> --pid-file D/init.pid [--console-socket
D/console.sock] <id>`` (then ``start``, ``kill``, ``delete``, ``pause``,
``resume``).

Launch: ``[sys.executable, "-I", "-m", "isobox.shim", D, "--ready-fd", N]``
with a new session, stdin and stdout on /dev/null, stderr on ``D/shim.log``
and fd N inherited (:func:`isobox.shim.client.launch` does exactly this). The
process forks once at start (so it is nobody's child but init's, and a
long-lived daemon has no zombie to reap); the grandchild is the shim. It
writes one JSON line on fd N, then closes it:
``{"ok": true, "pid": <init host pid>, "shim_pid": <pid>}`` once the
container is created, or ``{"ok": false, "error": "<one line>", "exit_code":
125|126|127}`` (127: command not found, 126: cannot be executed, 125: any
other failure), after which nothing is left: no mount, no runtime state, no
socket, no shim process.

``state.json``::

    {"shim_pid": int, "pid": int (0 when not running), "paused": bool,
     "status": "created"|"running"|"exited"|"restarting",
     "exit_code": int (signal n: 128+n), "oom_killed": bool,
     "started_at": RFC 3339 nano, "finished_at": RFC 3339 nano
     (Docker's zero time "0001-01-01T00:00:00Z" until set),
     "restart_count": int, "error": str}

Requests on ``shim.sock``: one JSON line each; the reply is one JSON line,
``{"ok": true, ...}`` or ``{"ok": false, "error": str, "kind": <name of an
isobox.errors class>}``:

- ``{"op": "start"}``: runtime start.
- ``{"op": "attach", "stdin": b, "stdout": b, "stderr": b}``: after the reply
  the connection is a stream. Output from then on, in Docker's multiplexed
  frames without a tty (8-byte header ``[stream (1 stdout, 2 stderr), 0, 0,
  0, uint32 big-endian length]`` + payload), raw with one. Bytes the client
  sends go to the container's stdin (when attached with stdin and the
  container has ``open_stdin``); the client's half-close closes the
  container's stdin when ``stdin_once``. The stream ends when the container
  exits. Detach keys are the client's business.
- ``{"op": "resize", "height": h, "width": w}`` (tty only).
- ``{"op": "kill", "signal": n, "all": b}``: SIGKILL or the stop signal also
  cancels any restart, as Docker's kill does.
- ``{"op": "stop", "signal": n, "timeout": s}``: a manual stop (no restart,
  whatever the policy); SIGKILL after ``timeout`` seconds; the reply,
  ``{"ok": true, "exit_code": n}``, comes once the process has exited.
- ``{"op": "wait"}``: the reply comes once the container has exited for good
  (not restarting): ``{"ok": true, "exit_code": n, "oom_killed": b}``.
- ``{"op": "pause"}``, ``{"op": "resume"}``: runtime pause and resume.
- ``{"op": "state"}``: ``{"ok": true, "state": <state.json's dict>}``.

SIGTERM to the shim is a stop with ``stop_signal`` and ``stop_timeout``.

When the container has exited for good the shim unmounts the rootfs, removes
``shim.sock``, writes the final state, ends attach streams, answers waiters
and exits 0. A shim killed with SIGKILL leaves ``state.json`` and the log
whole (atomic state writes; one write per log record) but its container
runs on without a monitor: its output pipes have no reader any more (the
next write gets EPIPE or SIGPIPE), nobody reaps it but init, and the rootfs
stays mounted. The engine cleans up with the runtime (``kill``, ``delete
--force`` against ``runtime_root``) and unmounts ``D/bundle/rootfs``.
"""

from __future__ import annotations

import json
import os
import time

from isobox.errors import InvalidArgument, IsoboxError, for_exit_code

SHIM_CONFIG = "shim.json"
STATE_FILE = "state.json"
SOCKET = "shim.sock"
SHIM_LOG = "shim.log"
SHIM_PID = "shim.pid"
#: Held (flock) by the container's monitor from its start until its final
#: state is written; ``rm`` takes it before it deletes the directory, and
#: unlinks it, so a monitor still being launched for a container that is
#: being removed either waits for the removal and gives up, or is stopped.
SHIM_LOCK = "shim.lock"
INIT_PID = "init.pid"
RUNTIME_LOG = "runtime-log.json"
CONSOLE_SOCKET = "console.sock"

BUILTIN_RUNTIME = "isobox-runtime"
MOUNT_TYPES = ("overlay", "bind")
RESTART_NAMES = ("no", "on-failure", "always", "unless-stopped")
ZERO_TIME = "0001-01-01T00:00:00Z"

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.vm.settings import VmSettings


class RootfsMount:
    __slots__ = ("options", "source", "type")

    def __init__(self, type: str, source: str, options: list[str]) -> None:
        self.type = type
        self.source = source
        self.options = options


class RestartPolicy:
    __slots__ = ("max_retries", "name")

    def __init__(self, name: str = "no", max_retries: int = 0) -> None:
        if name == "":
            name = "no"
        if name not in RESTART_NAMES:
            raise InvalidArgument(f"invalid restart policy {name!r}")
        if max_retries < 0:
            raise InvalidArgument("restart max_retries must not be negative")
        self.name = name
        self.max_retries = max_retries


class ShimConfig:
    """shim.json, checked field by field."""

    __slots__ = (
        "bundle",
        "dir",
        "exit_command",
        "id",
        "log_max_file",
        "log_max_size",
        "log_path",
        "open_stdin",
        "restart",
        "restart_hook",
        "rootfs_mounts",
        "runtime",
        "runtime_root",
        "stdin_once",
        "stop_signal",
        "stop_timeout",
        "tty",
        "vm",
    )

    def __init__(self, container_dir: str, raw: dict[str, Any]) -> None:
        if not isinstance(raw, dict):
            raise InvalidArgument("shim.json: not an object")
        self.dir = os.path.abspath(container_dir)
        self.id = _get(raw, "id", str)
        if not self.id:
            raise InvalidArgument("shim.json: empty id")
        self.bundle = _get(raw, "bundle", str, os.path.join(self.dir, "bundle"))
        self.runtime = _get(raw, "runtime", str, BUILTIN_RUNTIME)
        if self.runtime != BUILTIN_RUNTIME and not os.path.isabs(self.runtime):
            raise InvalidArgument(f"shim.json: runtime {self.runtime!r} is not an absolute path")
        self.runtime_root = _get(raw, "runtime_root", str)
        self.tty = _get(raw, "tty", bool, False)
        self.open_stdin = _get(raw, "open_stdin", bool, False)
        self.stdin_once = _get(raw, "stdin_once", bool, False)
        self.log_path = _get(raw, "log_path", str, os.path.join(self.dir, f"{self.id}-json.log"))
        self.log_max_size = _get(raw, "log_max_size", int, 0)
        self.log_max_file = max(1, _get(raw, "log_max_file", int, 1))
        self.stop_signal = _get(raw, "stop_signal", int, 15)
        self.stop_timeout = _get(raw, "stop_timeout", int, 10)
        restart = _get(raw, "restart", dict, {})
        self.restart = RestartPolicy(_get(restart, "name", str, "no", "restart."),
                                     _get(restart, "max_retries", int, 0, "restart."))
        self.rootfs_mounts = [_mount(m) for m in _get(raw, "rootfs_mounts", list, [])]
        #: VM isolation: the utility VM's settings (isobox.vm.settings); None: process.
        self.vm: VmSettings | None = None
        if raw.get("vm") is not None:
            from isobox.vm.settings import VmSettings

            self.vm = VmSettings(raw["vm"])
        #: Run after a restart policy's create, before start, with the init's
        #: pid in ISOBOX_INIT_PID (the engine reconnects the new namespace).
        self.restart_hook = [str(a) for a in _get(raw, "restart_hook", list, [])]
        if self.restart_hook and not os.path.isabs(self.restart_hook[0]):
            raise InvalidArgument("shim.json: restart_hook must start with an absolute path")
        #: Run (detached) once the container is done for good: ``--rm``.
        self.exit_command = [str(a) for a in _get(raw, "exit_command", list, [])]
        if self.exit_command and not os.path.isabs(self.exit_command[0]):
            raise InvalidArgument("shim.json: exit_command must start with an absolute path")

    @classmethod
    def load(cls, container_dir: str) -> ShimConfig:
        path = os.path.join(container_dir, SHIM_CONFIG)
        try:
            with open(path, "rb") as f:
                raw = json.loads(f.read())
        except FileNotFoundError:
            raise InvalidArgument(f"{path} does not exist") from None
        except ValueError as exc:
            raise InvalidArgument(f"{path}: {exc}") from None
        return cls(container_dir, raw)

    @property
    def rootfs(self) -> str:
        return os.path.join(self.bundle, "rootfs")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)


_MISSING: Any = object()


def _get(raw: dict[str, Any], key: str, kind: type[Any], default: Any = _MISSING,
         prefix: str = "") -> Any:
    if key not in raw or raw[key] is None:
        if default is _MISSING:
            raise InvalidArgument(f"shim.json: {prefix}{key} is missing")
        return default
    value = raw[key]
    # bool is an int subclass: refuse true for an int field and 1 for a bool one
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(f"shim.json: {prefix}{key} must be {kind.__name__}")
    return value


def _mount(raw: Any) -> RootfsMount:
    if not isinstance(raw, dict):
        raise InvalidArgument("shim.json: rootfs_mounts entries must be objects")
    kind = _get(raw, "type", str, prefix="rootfs_mounts.")
    if kind not in MOUNT_TYPES:
        raise InvalidArgument(f"shim.json: unsupported rootfs mount type {kind!r}")
    options = _get(raw, "options", list, [], "rootfs_mounts.")
    if not all(isinstance(o, str) for o in options):
        raise InvalidArgument("shim.json: rootfs_mounts.options must be strings")
    return RootfsMount(kind, _get(raw, "source", str, kind, "rootfs_mounts."), options)


def exit_code_for(message: str, default: int = 125) -> int:
    """Docker's exit code for a failed create, from the runtime's message."""
    text = message.lower()
    if "executable file not found" in text or "no such file or directory" in text:
        return 127
    if "permission denied" in text or "is a directory" in text:
        return 126
    return default if default in (125, 126, 127) else 125


def error_for(message: str, exit_code: int = 125) -> IsoboxError:
    """The isobox error a create failure becomes: 127, 126, or 125."""
    return for_exit_code(message, exit_code)


def rfc3339(ns: int) -> str:
    """UTC, nanoseconds, as Docker writes times: 2026-11-28T05:29:33.123456789Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + \
        f".{ns % 1_000_000_000:09d}Z"


def now() -> str:
    return rfc3339(time.time_ns())
