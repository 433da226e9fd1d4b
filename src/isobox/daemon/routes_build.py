"""``POST /build``: Docker's classic builder over the engine's ``build``.

The request body is the context, a tar (gzip or not) as ``docker build``
sends it; the build runs on a worker thread reading that body through a
pipe, and every line it logs (``Step 1/3 : ...``, a RUN's output) goes out
at once as one of Docker's JSON messages (``{"stream": ...}``), then
``{"aux": {"ID": ...}}`` and the ``Successfully built/tagged`` lines. An
error before the first message is an error response; after it, an
``errorDetail`` message (with a failing RUN's exit code, which the docker
CLI exits with), as dockerd does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, BinaryIO

from aiohttp import web

from isobox.daemon.api import ApiError, add, qbool
from isobox.daemon.backend import Services
from isobox.daemon.streams import receive_stream
from isobox.engine.build import BuildError, BuildRequest, BuildResult, build
from isobox.errors import IsoboxError


def _json_map(request: web.Request, name: str, *, nulls: bool) -> dict[str, str | None]:
    raw = request.query.get(name)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid {name}: {raw}") from None
    if not isinstance(data, Mapping):
        raise ApiError(400, f"invalid {name}: {raw}")
    out: dict[str, str | None] = {}
    for key, value in data.items():
        if value is None:
            out[str(key)] = None if nulls else ""
        elif isinstance(value, str):
            out[str(key)] = value
        else:
            raise ApiError(400, f"invalid {name}: {key}: want a string")
    return out


def _request(request: web.Request, body: BinaryIO) -> BuildRequest:
    remote = request.query.get("remote") or ""
    context: str | BinaryIO = body
    if remote:
        if not remote.startswith(("http://", "https://")):
            raise ApiError(400, f"remote context {remote!r}: only http(s) URLs of a "
                                "tarball are supported (no git)")
        context = remote  # the engine downloads it
    isolation = request.query.get("isolation", "")
    network = request.query.get("networkmode", "") or "default"
    labels = {k: v or "" for k, v in _json_map(request, "labels", nulls=False).items()}
    return BuildRequest(
        context=context, dockerfile=request.query.get("dockerfile") or None,
        tags=request.query.getall("t", []),
        build_args=_json_map(request, "buildargs", nulls=True),
        target=request.query.get("target") or None, no_cache=qbool(request, "nocache"),
        labels=labels, network=network,
        isolation="" if isolation in ("", "default") else isolation,
        platform=request.query.get("platform") or None, pull=qbool(request, "pull"))


def _message(item: tuple[str, Any]) -> dict[str, Any]:
    kind, value = item
    if kind == "aux":
        return {"aux": {"ID": value}}
    return {"stream": value}


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, IsoboxError | ApiError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = exc.strerror or str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    detail: dict[str, Any] = {"message": message}
    if isinstance(exc, BuildError):
        detail["code"] = exc.exit_code
    return {"errorDetail": detail, "error": message}


async def build_(request: web.Request) -> web.StreamResponse:
    quiet = qbool(request, "q")
    # rm, forcerm: build containers are always removed.
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(kind: str, value: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

    def log(line: str) -> None:
        if not quiet:
            emit("stream", line)

    def built(result: BuildResult) -> None:
        emit("aux", result.image_id)

    def run(services: Services, body: BinaryIO) -> BuildResult:
        return build(services.containers, _request(request, body), log, built)

    task = asyncio.ensure_future(receive_stream(request, run))
    task.add_done_callback(lambda _: queue.put_nowait(("done", None)))
    response: web.StreamResponse | None = None

    async def send(message: dict[str, Any]) -> web.StreamResponse:
        nonlocal response
        if response is None:
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
        await response.write(json.dumps(message).encode() + b"\r\n")
        return response

    try:
        while True:
            item = await queue.get()
            if item[0] == "done":
                break
            await send(_message(item))
        error = task.exception()
        if error is not None:
            if response is None:
                raise error  # nothing sent yet: an error status, as dockerd answers
            await send(_error(error))
        elif quiet:
            await send({"stream": task.result().image_id + "\n"})
        if response is None:  # an empty, quiet build cannot happen; be safe
            response = web.StreamResponse()
            await response.prepare(request)
        await response.write_eof()
        return response
    finally:
        if not task.done():
            task.cancel()


def register(app: web.Application) -> None:
    add(app, "POST", "/build", build_)
