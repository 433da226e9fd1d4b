"""What every handler shares: the application, API versions, Docker's error
body and status codes, and reading query strings and bodies the way the
Engine API writes them."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from isobox import errors
from isobox.daemon.backend import Backend

log = logging.getLogger("isobox.daemon")

MIN_API_VERSION = (1, 41)
#: The newest version the docker CLI on our hosts speaks (28.x: 1.50).
API_VERSION = (1, 50)
#: The largest JSON body a handler reads (archives and images stream instead).
MAX_JSON_BODY = 8 << 20

BACKEND: web.AppKey[Backend] = web.AppKey("backend", Backend)
STATE: web.AppKey[dict[str, Any]] = web.AppKey("state", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON_HEADERS = {"Content-Type": "application/json"}


def version_text(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


class ApiError(Exception):
    """An error with Docker's status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_of(exc: errors.IsoboxError) -> int:
    if isinstance(exc, errors.NotFound):
        return 404
    if isinstance(exc, errors.AlreadyExists | errors.Conflict):
        return 409
    if isinstance(exc, errors.InvalidArgument):
        return 400
    if isinstance(exc, errors.Unavailable):
        return 501
    return 500


_encode = msgspec.json.Encoder().encode


def json_bytes(data: Any) -> bytes:
    """``data`` as JSON and a newline, as dockerd writes it. msgspec is
    several times faster than ``json.dumps``; what it refuses (NaN is
    ``null`` there, not an error) goes through ``json`` as before."""
    try:
        return _encode(data) + b"\n"
    except (TypeError, ValueError, OverflowError):
        return json.dumps(data).encode() + b"\n"


def json_response(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": the docker CLI reads an error's message
    # only under that type (no charset).
    return web.Response(body=json_bytes(data), status=status, content_type=None,
                        headers=_JSON_HEADERS)


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status=status)


def backend(request: web.Request) -> Backend:
    return request.app[BACKEND]


def api_version(request: web.Request) -> tuple[int, int]:
    text = request.match_info.get("version")
    if not text:
        return API_VERSION
    major, _, minor = text.lstrip("v").partition(".")
    return int(major), int(minor)


# -- query strings -------------------------------------------------------------------

def qbool(request: web.Request, name: str, default: bool = False) -> bool:
    """Docker's boolean query values: ``1``/``true``/``True``; an empty or
    absent value is the default; ``0``/``false``/``no`` are false."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def qint(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, f"invalid value for {name}: {raw!r}") from None


def qfilters(request: web.Request) -> dict[str, list[str]]:
    """``filters={"key":["v"]}`` (or the old ``{"key":{"v":true}}``)."""
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid filter: {raw}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"invalid filter: {raw}")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[str(key)] = [str(k) for k, v in value.items() if v]
        elif isinstance(value, list):
            out[str(key)] = [str(v) for v in value]
        else:
            raise ApiError(400, f"invalid filter: {raw}")
    return out


def filter_args(filters: dict[str, list[str]]) -> list[str]:
    """The CLI's ``key=value`` form of the API's filters, as the engine takes them."""
    return [f"{key}={value}" for key, values in filters.items() for value in values]


async def body_json(request: web.Request, *, required: bool = False) -> Any:
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise ApiError(413, "request body too large")
    raw = await request.content.read(MAX_JSON_BODY + 1)
    if len(raw) > MAX_JSON_BODY:
        raise ApiError(413, "request body too large")
    if not raw.strip():
        if required:
            raise ApiError(400, "missing request body")
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None


async def body_object(request: web.Request, *, required: bool = False) -> dict[str, Any]:
    data = await body_json(request, required=required)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid JSON: expected an object")
    return data


# -- middleware ------------------------------------------------------------------------

@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("version")
    if version:
        v = api_version(request)
        if v < MIN_API_VERSION:
            return error_response(400, f"client version {version_text(v)} is too old. "
                                  f"Minimum supported API version is "
                                  f"{version_text(MIN_API_VERSION)}, please upgrade your "
                                  "client to a newer version")
        if v > API_VERSION:
            return error_response(400, f"client version {version_text(v)} is too new. "
                                  f"Maximum supported API version is "
                                  f"{version_text(API_VERSION)}")
    try:
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc.status, str(exc))
    except errors.IsoboxError as exc:
        return error_response(status_of(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, exc.reason if exc.status != 404
                                  else "page not found")
        raise
    except (ConnectionResetError, BrokenPipeError):
        raise
    except OSError as exc:
        return error_response(500, exc.strerror or str(exc))
    except Exception as exc:
        log.exception("%s %s", request.method, request.path)
        return error_response(500, f"{type(exc).__name__}: {exc}")
    return response


#: Docker's headers on every response.
DOCKER_HEADERS: dict[str, str] = {
    "Api-Version": version_text(API_VERSION), "Docker-Experimental": "false",
    "Ostype": "linux", "Server": "isoboxd (linux)"}


async def docker_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Docker's headers on every response (``on_response_prepare``)."""
    response.headers.update(DOCKER_HEADERS)


def add(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """A route with and without the ``/v1.NN`` prefix."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, r"/{version:v[0-9]+\.[0-9]+}" + path, handler)
