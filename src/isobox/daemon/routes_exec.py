"""``/containers/{id}/exec`` and ``/exec/{id}/...``: exec instances live in
the daemon's memory (as in Docker's); each start runs the process through
the engine and relays its stdio over the hijacked connection."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from isobox.daemon import hijack as hj
from isobox.daemon.api import STATE, ApiError, add, backend, body_object, json_response, qint
from isobox.daemon.backend import Backend, Services
from isobox.engine import api_exec
from isobox.errors import Conflict, NotFound

CHUNK = 1 << 16


@dataclass
class ExecInstance:
    id: str
    container_id: str
    config: dict[str, Any]
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    process: api_exec.ExecProcess | None = field(default=None, repr=False)

    def inspect(self) -> dict[str, Any]:
        pid = self.process.pid if self.process is not None and self.running else 0
        return api_exec.exec_inspect(self.id, self.config, self.container_id,
                                     running=self.running, exit_code=self.exit_code, pid=pid)


def _execs(request: web.Request) -> dict[str, ExecInstance]:
    found: dict[str, ExecInstance] = request.app[STATE].setdefault("execs", {})
    return found


def _lookup(request: web.Request) -> ExecInstance:
    exec_id = request.match_info["id"]
    found = _execs(request).get(exec_id)
    if found is None:
        raise NotFound(f"No such exec instance: {exec_id}")
    return found


async def create(request: web.Request) -> web.Response:
    ref = request.match_info["id"]
    config = await body_object(request, required=True)
    cmd = config.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd or not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
        raise ApiError(400, "No exec command specified")
    config["Cmd"] = cmd
    # Go's JSON decoding ignores case: docker-py sends "detachKeys".
    keys = next((v for k, v in config.items() if k.lower() == "detachkeys"), None) or ""
    config["DetachKeys"] = keys
    try:
        hj.parse_detach_keys(str(keys)) if keys else None
    except ValueError:
        # A plain error in Docker's daemon, so a 500 there too.
        raise ApiError(500, f"Invalid escape keys ({keys}) provided") from None

    def check(s: Services) -> str:
        record = s.containers.get(ref)
        if record.state["Status"] == "paused":
            raise Conflict(f"Container {record.id} is paused, unpause the container before "
                           "exec")
        if record.state["Status"] != "running":
            raise Conflict(f"Container {record.id} is not running")
        return str(record.id)

    container_id = await backend(request).call(check)
    exec_id = secrets.token_hex(32)
    _execs(request)[exec_id] = ExecInstance(exec_id, container_id, config)
    return json_response({"Id": exec_id}, status=201)


async def inspect(request: web.Request) -> web.Response:
    return json_response(_lookup(request).inspect())


async def resize(request: web.Request) -> web.Response:
    instance = _lookup(request)
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0
    if instance.process is None or not instance.running:
        raise Conflict(f"Exec {instance.id} is not running")
    instance.process.resize(h, w)
    return web.Response(status=200)


def _launch(instance: ExecInstance, *, detach: bool, tty: bool) -> Any:
    config = instance.config

    def run(s: Services) -> api_exec.ExecProcess:
        return api_exec.start_exec(
            s.containers, instance.container_id, list(config["Cmd"]), tty=tty,
            stdin=bool(config.get("AttachStdin")) and not detach,
            env=list(config.get("Env") or []), user=config.get("User") or None,
            workdir=config.get("WorkingDir") or None,
            privileged=bool(config.get("Privileged")), detach=detach)

    return run


async def start(request: web.Request) -> web.StreamResponse:
    instance = _lookup(request)
    body = await body_object(request)
    if instance.started:
        raise Conflict(f"Exec {instance.id} has already started")
    detach = bool(body.get("Detach"))
    tty = bool(body.get("Tty", instance.config.get("Tty")))
    engine = backend(request)
    instance.started = True
    process = await engine.call(_launch(instance, detach=detach, tty=tty))
    instance.process, instance.running = process, True
    if detach:
        code = await engine.run(process.wait)
        process.close()
        instance.running = False
        return web.Response(status=200 if code == 0 else 500)
    size = body.get("ConsoleSize") or instance.config.get("ConsoleSize")
    if tty and isinstance(size, list) and len(size) == 2 and all(size):
        with contextlib.suppress(OSError, Conflict):
            process.resize(int(size[0]), int(size[1]))
    try:
        stream = await hj.hijack(request, tty=tty)
    except BaseException:
        process.proc.kill()
        await engine.run(process.wait)
        process.close()
        instance.running = False
        raise
    keys_text = str(instance.config.get("DetachKeys") or "")
    keys = None
    if tty and instance.config.get("AttachStdin"):  # Docker's default: ctrl-p ctrl-q
        keys = hj.parse_detach_keys(keys_text) if keys_text else hj.DEFAULT_DETACH_KEYS
    try:
        await _relay(engine, stream, process, tty=tty, keys=keys,
                     on_detach=lambda: _detached(engine, instance))
    finally:
        code = await engine.run(process.wait)
        instance.exit_code, instance.running = code, False
        process.close()
        stream.close()
        container_id, cmd = instance.container_id, list(instance.config["Cmd"])
        await engine.call(lambda s: api_exec.exec_died(s.containers, container_id, cmd, code))
    return stream.response


async def _detached(engine: Backend, instance: ExecInstance) -> None:
    await engine.call(lambda s: api_exec.container_event(
        s.containers, instance.container_id, "exec_detach", execID=instance.id))


async def _relay(engine: Backend, stream: hj.Hijacked, process: api_exec.ExecProcess, *,
                 tty: bool, keys: bytes | None = None,
                 on_detach: Callable[[], Awaitable[None]] | None = None) -> None:
    """The process's output to the client and the client's input to it.
    With ``keys`` (a tty) the input is watched for the detach sequence: the
    client is then cut off, and the process keeps running, its output read
    and dropped until it ends."""
    escape = hj.DetachKeys(keys) if keys else None
    def read(fd: int) -> bytes:
        try:
            return os.read(fd, CHUNK)
        except OSError:  # EIO: the pty's last writer is gone
            return b""

    def write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    async def output(fd: int, kind: int) -> None:
        while True:
            data = await engine.run(read, fd)
            if not data:
                return
            await stream.write(data if tty else hj.frame(kind, data))

    async def inbound() -> None:
        target = process.master if tty else process.stdin
        while True:
            chunk = await stream.stdin.read(CHUNK)
            data, detached = chunk, False
            if escape is not None:
                # At the end, a partial sequence held back goes through.
                data, detached = escape.feed(chunk) if chunk else (escape.flush(), False)
            if target is not None and data:
                try:
                    await engine.run(write_all, target, data)
                except OSError:
                    return
            if detached:
                stream.close()  # the process keeps running; its output goes nowhere
                if on_detach is not None:
                    await on_detach()
                return
            if not chunk:
                break
        if not tty and process.proc.stdin is not None:
            with contextlib.suppress(OSError):
                process.proc.stdin.close()
            process.stdin = None

    outputs = []
    if tty and process.master is not None:
        outputs.append(output(process.master, hj.STDOUT))
    else:
        if process.stdout is not None:
            outputs.append(output(process.stdout, hj.STDOUT))
        if process.stderr is not None:
            outputs.append(output(process.stderr, hj.STDERR))
    pump = asyncio.ensure_future(inbound())
    try:
        await asyncio.gather(*outputs)
    finally:
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump


def register(app: web.Application) -> None:
    add(app, "POST", "/containers/{id}/exec", create)
    add(app, "POST", "/exec/{id}/start", start)
    add(app, "POST", "/exec/{id}/resize", resize)
    add(app, "GET", "/exec/{id}/json", inspect)
