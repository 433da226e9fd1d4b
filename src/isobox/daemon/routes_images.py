"""``/images/...``: thin adapters over the engine's ImageService."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from isobox.daemon.api import (
    ApiError,
    add,
    backend,
    filter_args,
    json_response,
    qbool,
    qfilters,
)
from isobox.daemon.backend import Services
from isobox.daemon.streams import receive_stream, send_stream
from isobox.engine import api_images


async def _json_lines(request: web.Request, items: Any) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    async for item in items:
        await response.write(json.dumps(item).encode() + b"\r\n")
    await response.write_eof()
    return response


async def list_(request: web.Request) -> web.Response:
    all_ = qbool(request, "all")
    filters = filter_args(qfilters(request))
    digests = qbool(request, "digests", True)
    rows = await backend(request).read(lambda s: api_images.list_images(
        s.images, all_images=all_, filters=filters, digests=digests))
    return json_response(rows)


async def inspect(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return json_response(await backend(request).read(lambda s: s.images.inspect(name)))


async def history(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return json_response(await backend(request).call(
        lambda s: api_images.history(s.images, name)))


async def tag(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    repo = request.query.get("repo", "")
    if not repo:
        raise ApiError(400, "repository name must have at least one component")
    target = api_images.image_ref(repo, request.query.get("tag", ""))
    await backend(request).call(lambda s: s.images.tag(name, target))
    return web.Response(status=201)


async def remove(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    force = qbool(request, "force")
    lines = await backend(request).call(lambda s: s.images.remove(name, force=force))
    return json_response(api_images.report_lines(lines))


async def prune(request: web.Request) -> web.Response:
    from isobox.engine import api_prune

    filters = api_prune.parse(qfilters(request), api_prune.IMAGE_FILTERS)
    filters.flag("dangling", True)  # Docker's 400 for a value that is no boolean
    lines, freed = await backend(request).call(
        lambda s: api_prune.prune_images(s.images, filters))
    return json_response({"ImagesDeleted": api_images.report_lines(lines) or None,
                          "SpaceReclaimed": freed})


async def create(request: web.Request) -> web.StreamResponse:
    """Pull (``fromImage``) or import (``fromSrc=-``, the body a tarball)."""
    from_image = request.query.get("fromImage", "")
    from_src = request.query.get("fromSrc", "")
    tag_ = request.query.get("tag", "")
    platform = request.query.get("platform") or None
    if from_src:
        if from_src != "-":
            raise ApiError(400, "importing from a URL is not supported: send the archive")
        repo = request.query.get("repo", "")
        ref = api_images.image_ref(repo, tag_) if repo else None
        changes = request.query.getall("changes", [])
        message = request.query.get("message") or None
        image_id = await receive_stream(request, lambda s, body: s.images.import_(
            body, ref=ref, changes=changes, message=message))
        return json_response({"status": image_id})
    if not from_image:
        raise ApiError(400, "fromImage or fromSrc is required")
    name = api_images.image_ref(from_image, tag_)

    def lines(s: Services, stop: threading.Event) -> Iterator[dict[str, Any]]:
        return api_images.pull_stream(s.images, name, platform=platform)

    return await _json_lines(request, backend(request).iterate(lines))


async def push(request: web.Request) -> web.StreamResponse:
    name = api_images.image_ref(request.match_info["name"], request.query.get("tag", ""))
    await backend(request).call(lambda s: s.images.get(name))

    def lines(s: Services, stop: threading.Event) -> Iterator[dict[str, Any]]:
        return api_images.push_stream(s.images, name)

    return await _json_lines(request, backend(request).iterate(lines))


async def load(request: web.Request) -> web.StreamResponse:
    # Docker writes the "Loaded image" lines even when quiet (no progress bars).
    lines = await receive_stream(request, lambda s, body: s.images.load(body))
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    for line in lines:
        await response.write(json.dumps({"stream": line + "\n"}).encode() + b"\r\n")
    await response.write_eof()
    return response


async def save(request: web.Request) -> web.StreamResponse:
    names = request.query.getall("names", [])
    if "name" in request.match_info:
        names = [request.match_info["name"]]
    if not names:
        raise ApiError(400, "no image names given")
    for name in names:
        await backend(request).call(lambda s, n=name: s.images.get(n))  # type: ignore[misc]
    return await send_stream(request, lambda s, out: s.images.save(names, out))


async def search(request: web.Request) -> web.Response:
    raise ApiError(503, "search is not available: isoboxd searches no registry (Docker "
                        "Hub is out of reach here); pull by name from a registry instead")


def register(app: web.Application) -> None:
    add(app, "GET", "/images/json", list_)
    add(app, "POST", "/images/create", create)
    add(app, "POST", "/images/load", load)
    add(app, "GET", "/images/get", save)
    add(app, "POST", "/images/prune", prune)
    add(app, "GET", "/images/search", search)
    add(app, "GET", "/images/{name:.+}/json", inspect)
    add(app, "GET", "/images/{name:.+}/history", history)
    add(app, "GET", "/images/{name:.+}/get", save)
    add(app, "POST", "/images/{name:.+}/tag", tag)
    add(app, "POST", "/images/{name:.+}/push", push)
    add(app, "DELETE", "/images/{name:.+}", remove)
