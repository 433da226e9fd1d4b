"""``_ping``, ``version``, ``info``, ``events``, ``system/df``, ``auth``."""

from __future__ import annotations

import json
import platform
import socket
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from isobox import __version__
from isobox.daemon.api import (
    API_VERSION,
    MIN_API_VERSION,
    STATE,
    ApiError,
    add,
    backend,
    body_object,
    filter_args,
    json_response,
    qfilters,
    version_text,
)
from isobox.daemon.backend import Services
from isobox.engine import api_images, api_views


async def ping(request: web.Request) -> web.Response:
    headers = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache",
               "Builder-Version": "1", "Swarm": "inactive"}
    if request.method == "HEAD":
        return web.Response(status=200, headers=headers, content_type="text/plain")
    return web.Response(text="OK", headers=headers)


async def version(request: web.Request) -> web.Response:
    api, minimum = version_text(API_VERSION), version_text(MIN_API_VERSION)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    details = {"ApiVersion": api, "MinAPIVersion": minimum, "Os": "linux", "Arch": arch,
               "KernelVersion": platform.release(), "GitCommit": "", "BuildTime": "",
               "GoVersion": f"python{platform.python_version()}", "Experimental": "false"}
    return json_response({
        "Platform": {"Name": "isobox"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__, "ApiVersion": api, "MinAPIVersion": minimum, "GitCommit": "",
        "GoVersion": details["GoVersion"], "Os": "linux", "Arch": arch,
        "KernelVersion": platform.release(), "BuildTime": "",
    })


async def info(request: web.Request) -> web.Response:
    where = str(request.app[STATE].get("listening") or "")
    return json_response(await backend(request).call(lambda s: api_views.info(
        s.containers, name=socket.gethostname(), api_socket=where)))


def _since(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw:
        return None
    from isobox.engine.logs import parse_since

    try:
        return float(raw)
    except ValueError:
        return parse_since(raw)


class _Stopped(Exception):
    pass


async def events(request: web.Request) -> web.StreamResponse:
    from isobox.engine.events import EventFilter, follow

    match = EventFilter(filter_args(qfilters(request)))
    since, until = _since(request, "since"), _since(request, "until")

    def items(s: Services, stop: threading.Event) -> Iterator[dict[str, Any]]:
        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise _Stopped

        for ev in follow(s.containers.store, since=since, until=until, match=match,
                         sleep=sleep):
            yield ev.message()

    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    try:
        async for item in backend(request).iterate(items):
            await response.write(json.dumps(item).encode() + b"\n")
    except _Stopped:
        pass
    await response.write_eof()
    return response


async def df(request: web.Request) -> web.Response:
    def run(s: Services) -> dict[str, Any]:
        from isobox.engine.system import disk_usage
        from isobox.engine.volume_ops import VolumeOps, directory_size

        usage = {u.type: u for u in disk_usage(s.containers)}
        ops = VolumeOps(s.containers)
        users = ops.users()
        volumes = []
        for v in ops.volumes.all():
            volumes.append({**v, "UsageData": {"Size": directory_size(v["Mountpoint"]),
                                               "RefCount": len(users.get(v["Name"], []))}})
        return {
            "LayersSize": usage["Images"].size,
            "Images": api_images.list_images(s.images, all_images=True),
            "Containers": api_views.list_containers(s.containers, all_containers=True,
                                                    size=True),
            "Volumes": volumes, "BuildCache": [],
        }

    return json_response(await backend(request).call(run))


async def auth(request: web.Request) -> web.Response:
    body = await body_object(request, required=True)
    username, password = body.get("username") or "", body.get("password") or ""
    server = body.get("serveraddress") or ""
    if not server:
        raise ApiError(400, "serveraddress is required: isoboxd reaches no default registry")
    await backend(request).call(lambda s: s.images.login(server, username, password))
    return json_response({"Status": "Login Succeeded", "IdentityToken": ""})


def register(app: web.Application) -> None:
    for method in ("GET", "HEAD"):
        add(app, method, "/_ping", ping)
    add(app, "GET", "/version", version)
    add(app, "GET", "/info", info)
    add(app, "GET", "/events", events)
    add(app, "GET", "/system/df", df)
    add(app, "POST", "/auth", auth)
