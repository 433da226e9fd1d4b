"""``/containers/...``: thin adapters over the engine's ContainerService."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from isobox.daemon import hijack as hj
from isobox.daemon.api import (
    STATE,
    ApiError,
    add,
    backend,
    body_object,
    json_response,
    qbool,
    qfilters,
    qint,
)
from isobox.daemon.backend import Services
from isobox.daemon.streams import receive_stream, send_stream
from isobox.engine import api_exec, api_views, live
from isobox.errors import Conflict, IsoboxError, NotFound


def _ref(request: web.Request) -> str:
    return request.match_info["id"]


def _no_content() -> web.Response:
    return web.Response(status=204)


async def list_(request: web.Request) -> web.Response:
    all_ = qbool(request, "all")
    limit = qint(request, "limit", -1) or -1
    size = qbool(request, "size")
    filters = qfilters(request)
    # Sizes walk the writable layers: the pool, not the reader thread.
    call = backend(request).call if size else backend(request).read
    rows = await call(lambda s: api_views.list_containers(
        s.containers, all_containers=all_, limit=limit, size=size, filters=filters))
    return json_response(rows)


async def create(request: web.Request) -> web.Response:
    body = await body_object(request, required=True)
    name = request.query.get("name") or None
    platform = request.query.get("platform") or None

    def run(s: Services) -> str:
        from isobox.engine.api_types import decode_create

        decode_create(body)  # Docker's 400 for wrong types, before anything is made
        return s.containers.create(body, name=name, pull="never", platform=platform)

    cid = await backend(request).call(run)
    return json_response({"Id": cid, "Warnings": []}, status=201)


async def inspect(request: web.Request) -> web.Response:
    ref = _ref(request)
    size = qbool(request, "size")

    def run(s: Services) -> dict[str, Any]:
        out = s.containers.inspect(ref)
        if size:
            out["SizeRw"] = s.containers.size(out["Id"])
            out["SizeRootFs"] = out["SizeRw"]
        return out

    call = backend(request).call if size else backend(request).read_on_loop
    return json_response(await call(run))


async def top(request: web.Request) -> web.Response:
    from isobox.engine.top import top as engine_top

    ref = _ref(request)
    ps_args = request.query.get("ps_args", "")
    titles, rows = await backend(request).call(lambda s: engine_top(s.containers, ref,
                                                                    ps_args))
    return json_response({"Titles": titles, "Processes": rows})


def _since(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw or raw == "0":
        return None
    try:
        return float(raw)
    except ValueError:
        from isobox.engine.logs import parse_since

        return parse_since(raw)


async def logs(request: web.Request) -> web.StreamResponse:
    from isobox.engine.logs import read_log

    ref = _ref(request)
    follow = qbool(request, "follow")
    want = {"stdout": qbool(request, "stdout"), "stderr": qbool(request, "stderr")}
    if not any(want.values()):
        raise ApiError(400, "Bad parameters: you must choose at least one stream")
    timestamps = qbool(request, "timestamps")
    tail_text = request.query.get("tail", "all")
    try:
        tail = None if tail_text in ("", "all") else int(tail_text)
    except ValueError:
        raise ApiError(400, f"invalid value for tail: {tail_text!r}") from None
    since, until = _since(request, "since"), _since(request, "until")
    record = await backend(request).call(lambda s: s.containers.get(ref))
    tty = bool(record.request.get("Tty"))

    def entries(s: Services, stop: threading.Event) -> Iterator[tuple[str, str, str]]:
        service = s.containers

        def running() -> bool:
            if stop.is_set():
                return False
            try:
                return live.is_live(service.reconcile(service.store.get(record.id)))
            except IsoboxError:
                return False

        return read_log(service.log_path(record.id), follow=follow, tail=tail, since=since,
                        until=until, running=running)

    response = web.StreamResponse()
    response.content_type = hj.RAW if tty else hj.MULTIPLEXED
    await response.prepare(request)
    async for stream, text, when in backend(request).iterate(entries):
        if not want.get(stream, False):
            continue
        data = (f"{when} {text}" if timestamps else text).encode()
        await response.write(data if tty else hj.frame(
            hj.STDERR if stream == "stderr" else hj.STDOUT, data))
    await response.write_eof()
    return response


async def changes(request: web.Request) -> web.Response:
    from isobox.engine.layerdiff import changes as engine_changes

    ref = _ref(request)
    kinds = {"C": 0, "A": 1, "D": 2}
    found = await backend(request).call(lambda s: engine_changes(s.containers, ref))
    return json_response([{"Path": path, "Kind": kinds.get(kind, 0)} for kind, path in found]
                         or None)


async def export(request: web.Request) -> web.StreamResponse:
    from isobox.engine.copy import export as engine_export

    ref = _ref(request)
    await backend(request).call(lambda s: s.containers.get(ref))
    return await send_stream(request, lambda s, out: engine_export(s.containers, ref, out))


async def stats(request: web.Request) -> web.StreamResponse:
    ref = _ref(request)
    stream = qbool(request, "stream", True)
    one_shot = qbool(request, "one-shot")
    await backend(request).call(lambda s: s.containers.get(ref))

    def items(s: Services, stop: threading.Event) -> Iterator[dict[str, Any]]:
        return api_views.stats_stream(s.containers, ref, stream=stream,  # type: ignore[no-any-return]
                                      one_shot=one_shot and not stream, stop=stop)

    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    async for item in backend(request).iterate(items):
        await response.write(json.dumps(item).encode() + b"\n")
    await response.write_eof()
    return response


async def resize(request: web.Request) -> web.Response:
    ref = _ref(request)
    h, w = qint(request, "h", 0) or 0, qint(request, "w", 0) or 0

    def run(s: Services) -> None:
        record = s.containers.get(ref)
        if not live.is_live(record):
            raise Conflict(f"Container {record.id} is not running")
        s.containers.shim(record).resize(h, w)

    await backend(request).call(run)
    return web.Response(status=200)


def _failed_launches(request: web.Request) -> dict[str, IsoboxError]:
    """Containers whose monitor could not create them when a client attached
    before the start: the start reports that error."""
    found: dict[str, IsoboxError] = request.app[STATE].setdefault("failed_launches", {})
    return found


async def start(request: web.Request) -> web.Response:
    ref = _ref(request)
    failed = _failed_launches(request)

    def run(s: Services) -> bool:
        record = s.containers.get(ref)
        if record.state["Status"] in ("running", "paused", "restarting"):
            return False
        try:
            error = failed.pop(record.id, None)
            # The failed monitor may not have exited yet: its last state
            # (exited with the create error) is what counts.
            if error is not None and (not s.containers.monitor_alive(record)
                                      or s.containers.launch_failed(record)):
                raise error
            s.containers.start(record.id)
        except IsoboxError:
            # Docker's daemon removes an AutoRemove container that failed to
            # start (the docker CLI waits for that removal).
            if (record.request.get("HostConfig") or {}).get("AutoRemove"):
                with contextlib.suppress(IsoboxError):
                    s.containers.remove(record.id, force=True)
            raise
        return True

    started = await backend(request).call(run)
    return web.Response(status=204 if started else 304)


async def stop(request: web.Request) -> web.Response:
    ref = _ref(request)
    timeout = qint(request, "t")
    signal = request.query.get("signal") or None

    def run(s: Services) -> bool:
        record = s.containers.get(ref)
        if not live.is_live(record):
            return False
        s.containers.stop(record.id, timeout, signal)
        return True

    stopped = await backend(request).call(run)
    return web.Response(status=204 if stopped else 304)


async def restart(request: web.Request) -> web.Response:
    ref = _ref(request)
    timeout = qint(request, "t")
    await backend(request).call(lambda s: s.containers.restart(ref, timeout))
    return _no_content()


async def kill(request: web.Request) -> web.Response:
    ref = _ref(request)
    signal = request.query.get("signal") or "KILL"
    await backend(request).call(lambda s: s.containers.kill(ref, signal))
    return _no_content()


async def pause(request: web.Request) -> web.Response:
    ref = _ref(request)
    await backend(request).call(lambda s: s.containers.pause(ref))
    return _no_content()


async def unpause(request: web.Request) -> web.Response:
    ref = _ref(request)
    await backend(request).call(lambda s: s.containers.unpause(ref))
    return _no_content()


async def rename(request: web.Request) -> web.Response:
    ref = _ref(request)
    name = request.query.get("name") or ""
    if not name:
        raise ApiError(400, "Neither old nor new names may be empty")
    await backend(request).call(lambda s: s.containers.rename(ref, name))
    return _no_content()


async def update(request: web.Request) -> web.Response:
    from isobox.engine.update import update as engine_update

    ref = _ref(request)
    body = await body_object(request)
    await backend(request).call(lambda s: engine_update(s.containers, ref, body))
    return json_response({"Warnings": []})


async def remove(request: web.Request) -> web.Response:
    ref = _ref(request)
    force, volumes = qbool(request, "force"), qbool(request, "v")
    await backend(request).call(lambda s: s.containers.remove(ref, force=force,
                                                              volumes=volumes))
    return _no_content()


async def prune(request: web.Request) -> web.Response:
    from isobox.engine import api_prune

    filters = api_prune.parse(qfilters(request), api_prune.CONTAINER_FILTERS)
    removed, freed = await backend(request).call(
        lambda s: api_prune.prune_containers(s.containers, filters))
    return json_response({"ContainersDeleted": removed or None, "SpaceReclaimed": freed})


async def wait(request: web.Request) -> web.StreamResponse:
    ref = _ref(request)
    condition = request.query.get("condition", "")
    if condition not in ("", "not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition: {condition!r}")
    finished = await backend(request).call(
        lambda s: str(s.containers.get(ref).state["FinishedAt"]))
    stop = threading.Event()
    # The headers go out at once: the docker CLI starts the container only
    # once its wait is in place.
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    try:
        result = await backend(request).call(lambda s: api_views.wait(
            s.containers, ref, condition, stop, finished=finished))
    except IsoboxError as exc:
        result = {"StatusCode": 255, "Error": {"Message": str(exc)}}
    finally:
        stop.set()
    await response.write(json.dumps(result).encode() + b"\n")
    await response.write_eof()
    return response


@dataclass
class _Attached:
    record: Any
    tty: bool
    sock: Any = None
    log_until: float = 0.0


def detach_keys(text: str, tty: bool) -> bytes | None:
    """The sequence that detaches a client from a tty (Docker's default
    ctrl-p ctrl-q when none is given); None without a tty, as in Docker."""
    keys = hj.parse_detach_keys(text) if text else hj.DEFAULT_DETACH_KEYS
    return keys if tty else None


async def attach(request: web.Request) -> web.StreamResponse:
    """Docker's attach: with ``logs`` the container's log first (all of it,
    up to the moment of attaching), then with ``stream`` its output live;
    with a tty, ``detachKeys`` (default ctrl-p ctrl-q) in the client's
    input detaches it and leaves the container running."""
    from isobox.engine.logs import read_log

    ref = _ref(request)
    stdin, stdout, stderr = (qbool(request, "stdin"), qbool(request, "stdout"),
                             qbool(request, "stderr"))
    logs, live_stream = qbool(request, "logs"), qbool(request, "stream")
    keys_text = request.query.get("detachKeys", "")
    try:
        hj.parse_detach_keys(keys_text) if keys_text else None
    except ValueError:
        raise ApiError(400, f"Invalid detach keys ({keys_text}) provided") from None

    def connect(s: Services) -> _Attached:
        service = s.containers
        record = service.get(ref)
        out = _Attached(record, bool(record.request.get("Tty")))
        status = record.state["Status"]
        if status == "paused":
            raise Conflict(f"container {ref} is paused, unpause the container before attach")
        if status == "restarting":
            raise Conflict(f"container {ref} is restarting, wait until the container is "
                           "running")
        # What the log holds up to now is replayed; what comes after, live.
        out.log_until = time.time()
        if not live_stream:
            return out
        if status == "created":
            try:
                service.ensure_monitor(record)
            except IsoboxError as exc:
                # The container cannot be made (its command is missing...):
                # start says why, as Docker's does; this stream just ends.
                failed[record.id] = exc
                return out
        elif not live.is_live(record):
            if logs:
                return out  # the log, and no live output: there is none
            raise Conflict("You cannot attach to a stopped container, start it first")
        out.sock = service.shim(record).attach(stdin, stdout, stderr)
        return out

    failed = _failed_launches(request)
    attached = await backend(request).call(connect)
    tty, sock = attached.tty, attached.sock
    try:
        stream = await hj.hijack(request, tty=tty)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    try:
        if logs and (stdout or stderr):
            until = attached.log_until
            await stream.headers_read()

            def entries(s: Services, stop: threading.Event) -> Iterator[tuple[str, str, str]]:
                return read_log(s.containers.log_path(attached.record.id), until=until)

            async for name, text, _ in backend(request).iterate(entries):
                if not (stdout if name == "stdout" else stderr) or stream.closed:
                    continue
                data = text.encode()
                await stream.write(data if tty else hj.frame(
                    hj.STDERR if name == "stderr" else hj.STDOUT, data))
    except BaseException:
        if sock is not None:
            sock.close()
        stream.close()
        raise
    if sock is None:
        stream.close()
        return stream.response
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    keys = detach_keys(keys_text, tty) if stdin else None
    if await relay(stream, reader, writer, stdin=stdin, keys=keys):
        record = attached.record
        await backend(request).call(lambda s: api_exec.container_event(
            s.containers, record.id, "detach"))
    return stream.response


async def relay(stream: hj.Hijacked, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter, *, stdin: bool,
                keys: bytes | None = None) -> bool:
    """Container output to the client until it ends; the client's input to
    the container, its end closing the container's stdin. With ``keys`` the
    client's input is watched for the detach sequence: then the client is
    cut off and the container left as it is. True when it detached."""
    escape = hj.DetachKeys(keys) if keys else None
    detached = asyncio.Event()

    async def inbound() -> None:
        while True:
            data = await stream.stdin.read(65536)
            if not data:
                break
            if escape is not None:
                data, hit = escape.feed(data)
                if hit:
                    detached.set()
            if stdin and data:
                writer.write(data)
                await writer.drain()
            if detached.is_set():
                return
        if escape is not None and stdin:
            writer.write(escape.flush())
        if stdin and writer.can_write_eof():
            writer.write_eof()

    async def outbound() -> None:
        while True:
            data = await reader.read(65536)
            if not data or stream.closed:
                break
            await stream.write(data)

    pump = asyncio.ensure_future(inbound())
    output = asyncio.ensure_future(outbound())
    cut = asyncio.ensure_future(detached.wait())
    try:
        await asyncio.wait({output, cut}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, output, cut):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        writer.close()
        stream.close()
    return detached.is_set()


# -- archive (docker cp) ---------------------------------------------------------------

def _path(request: web.Request) -> str:
    path = request.query.get("path", "")
    if not path:
        raise ApiError(400, "bad parameter: path cannot be empty")
    return path


def _stat_header(stat: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(stat).encode()).decode()


async def archive_head(request: web.Request) -> web.Response:
    from isobox.engine.api_archive import stat_path

    ref, path = _ref(request), _path(request)
    try:
        stat = await backend(request).call(lambda s: stat_path(s.containers, ref, path))
    except NotFound as exc:
        return web.Response(status=404, headers={"X-Isobox-Error": str(exc)})
    return web.Response(status=200, headers={"X-Docker-Container-Path-Stat":
                                             _stat_header(stat)})


async def archive_get(request: web.Request) -> web.StreamResponse:
    from isobox.engine.api_archive import stat_path
    from isobox.engine.copy import copy_from_container

    ref, path = _ref(request), _path(request)
    stat = await backend(request).call(lambda s: stat_path(s.containers, ref, path))
    return await send_stream(
        request, lambda s, out: copy_from_container(s.containers, ref, path, out),
        headers={"X-Docker-Container-Path-Stat": _stat_header(stat)})


async def archive_put(request: web.Request) -> web.Response:
    from isobox.engine.copy import copy_to_container

    ref, path = _ref(request), _path(request)
    archive = qbool(request, "copyUIDGID")
    await backend(request).call(lambda s: s.containers.get(ref))
    await receive_stream(request, lambda s, body: copy_to_container(
        s.containers, ref, body, path, archive=archive))
    return web.Response(status=200)


def register(app: web.Application) -> None:
    routes = [
        ("GET", "/containers/json", list_), ("POST", "/containers/create", create),
        ("POST", "/containers/prune", prune),
        ("GET", "/containers/{id}/json", inspect), ("GET", "/containers/{id}/top", top),
        ("GET", "/containers/{id}/logs", logs), ("GET", "/containers/{id}/changes", changes),
        ("GET", "/containers/{id}/export", export), ("GET", "/containers/{id}/stats", stats),
        ("POST", "/containers/{id}/resize", resize), ("POST", "/containers/{id}/start", start),
        ("POST", "/containers/{id}/stop", stop), ("POST", "/containers/{id}/restart", restart),
        ("POST", "/containers/{id}/kill", kill), ("POST", "/containers/{id}/pause", pause),
        ("POST", "/containers/{id}/unpause", unpause),
        ("POST", "/containers/{id}/rename", rename), ("POST", "/containers/{id}/update", update),
        ("POST", "/containers/{id}/attach", attach), ("POST", "/containers/{id}/wait", wait),
        ("DELETE", "/containers/{id}", remove),
        ("HEAD", "/containers/{id}/archive", archive_head),
        ("GET", "/containers/{id}/archive", archive_get),
        ("PUT", "/containers/{id}/archive", archive_put),
    ]
    for method, path, handler in routes:
        add(app, method, path, handler)
