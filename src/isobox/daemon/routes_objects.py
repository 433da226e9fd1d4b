"""``/volumes/...`` and ``/networks/...``: thin adapters over the engine's
volume operations and the container service's networking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from isobox.daemon.api import (
    ApiError,
    add,
    backend,
    body_object,
    filter_args,
    json_response,
    qbool,
    qfilters,
)
from isobox.daemon.backend import Services
from isobox.errors import Conflict


def _volumes(s: Services) -> Any:
    from isobox.engine.volume_ops import VolumeOps

    return VolumeOps(s.containers)


def _volume_view(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("LabelsMap", "Links", "Size")} | {
        "Labels": info.get("LabelsMap", info.get("Labels")) or {}}


async def volume_list(request: web.Request) -> web.Response:
    filters = filter_args(qfilters(request))
    rows = await backend(request).call(lambda s: _volumes(s).rows(filters))
    return json_response({"Volumes": [_volume_view(r) for r in rows], "Warnings": []})


async def volume_create(request: web.Request) -> web.Response:
    body = await body_object(request)
    info = await backend(request).call(lambda s: _volumes(s).create(
        body.get("Name") or None, labels=body.get("Labels") or None,
        driver=body.get("Driver") or "local", options=body.get("DriverOpts") or None))
    return json_response(info, status=201)


async def volume_inspect(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return json_response(await backend(request).call(lambda s: _volumes(s).inspect(name)))


async def volume_remove(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    force = qbool(request, "force")
    await backend(request).call(lambda s: _volumes(s).remove(name, force=force))
    return web.Response(status=204)


async def volume_prune(request: web.Request) -> web.Response:
    from isobox.engine import api_prune

    filters = api_prune.parse(qfilters(request), api_prune.VOLUME_FILTERS)
    filters.flag("all", False)  # Docker's 400 for a value that is no boolean
    removed, freed = await backend(request).call(
        lambda s: api_prune.prune_volumes(s.containers, filters))
    return json_response({"VolumesDeleted": removed or None, "SpaceReclaimed": freed})


# -- networks ---------------------------------------------------------------------------

def _match_network(net: Any, filters: dict[str, list[str]]) -> bool:
    checks: dict[str, Callable[[str], bool]] = {
        "name": lambda v: v in net.name, "id": lambda v: net.id.startswith(v),
        "driver": lambda v: net.driver == v,
        "type": lambda v: (v == "custom") != net.predefined,
        "label": lambda v: v.partition("=")[0] in net.labels and (
            not v.partition("=")[1] or net.labels[v.partition("=")[0]] == v.partition("=")[2]),
        "scope": lambda v: v == "local",
    }
    for key, values in filters.items():
        check = checks.get(key)
        if check is None:
            raise ApiError(400, f"invalid filter '{key}'")
        if not any(check(v) for v in values):
            return False
    return True


async def network_list(request: web.Request) -> web.Response:
    filters = qfilters(request)

    def run(s: Services) -> list[dict[str, Any]]:
        manager = s.containers.networking.manager
        return [manager.inspect(n.id) for n in manager.networks()
                if _match_network(n, filters)]

    return json_response(await backend(request).call(run))


async def network_inspect(request: web.Request) -> web.Response:
    ref = request.match_info["id"]
    return json_response(await backend(request).call(
        lambda s: s.containers.networking.manager.inspect(ref)))


async def network_create(request: web.Request) -> web.Response:
    body = await body_object(request, required=True)
    name = body.get("Name") or ""
    if not name:
        raise ApiError(400, "network name is required")
    ipam = (body.get("IPAM") or {}).get("Config") or [{}]
    if len(ipam) > 1:
        raise ApiError(400, "only one IPAM pool per network is supported")
    pool = ipam[0] or {}

    def run(s: Services) -> str:
        net = s.containers.networking.manager.create_network(
            name, driver=body.get("Driver") or "bridge", subnet=pool.get("Subnet") or "",
            gateway=pool.get("Gateway") or "", ip_range=pool.get("IPRange") or "",
            internal=bool(body.get("Internal")), labels=body.get("Labels") or {},
            options=body.get("Options") or {})
        return str(net.id)

    net_id = await backend(request).call(run)
    return json_response({"Id": net_id, "Warning": ""}, status=201)


async def network_remove(request: web.Request) -> web.Response:
    ref = request.match_info["id"]
    await backend(request).call(lambda s: s.containers.networking.manager.remove_network(ref))
    return web.Response(status=204)


async def network_prune(request: web.Request) -> web.Response:
    from isobox.engine import api_prune

    filters = api_prune.parse(qfilters(request), api_prune.NETWORK_FILTERS)
    removed = await backend(request).call(
        lambda s: api_prune.prune_networks(s.containers, filters))
    return json_response({"NetworksDeleted": removed or None})


async def network_connect(request: web.Request) -> web.Response:
    net = request.match_info["id"]
    body = await body_object(request, required=True)
    container = str(body.get("Container") or "")
    endpoint = body.get("EndpointConfig") or {}
    ip = ((endpoint.get("IPAMConfig") or {}).get("IPv4Address")) or None
    aliases = tuple(endpoint.get("Aliases") or ())

    def run(s: Services) -> None:
        record = s.containers.get(container)
        if record.state["Status"] not in ("running", "paused"):
            raise Conflict(f"container {record.id} is not running")
        s.containers.networking.connect(record, s.containers.dir(record.id),
                                        int(record.state["Pid"]), net, ip=ip, aliases=aliases)

    await backend(request).call(run)
    return web.Response(status=200)


async def network_disconnect(request: web.Request) -> web.Response:
    net = request.match_info["id"]
    body = await body_object(request, required=True)
    container = str(body.get("Container") or "")

    def run(s: Services) -> None:
        record = s.containers.get(container)
        s.containers.networking.disconnect(s.containers.dir(record.id), net)

    await backend(request).call(run)
    return web.Response(status=200)


def register(app: web.Application) -> None:
    add(app, "GET", "/volumes", volume_list)
    add(app, "POST", "/volumes/create", volume_create)
    add(app, "POST", "/volumes/prune", volume_prune)
    add(app, "GET", "/volumes/{name}", volume_inspect)
    add(app, "DELETE", "/volumes/{name}", volume_remove)
    add(app, "GET", "/networks", network_list)
    add(app, "POST", "/networks/create", network_create)
    add(app, "POST", "/networks/prune", network_prune)
    add(app, "GET", "/networks/{id}", network_inspect)
    add(app, "DELETE", "/networks/{id}", network_remove)
    add(app, "POST", "/networks/{id}/connect", network_connect)
    add(app, "POST", "/networks/{id}/disconnect", network_disconnect)
