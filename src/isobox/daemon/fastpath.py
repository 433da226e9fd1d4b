"""A front for each connection that answers the hottest requests itself and
hands the connection to aiohttp at the first request it does not know.

The docker CLI opens a connection per command and sends ``HEAD /_ping`` and
one GET (``ps``: ``/containers/json``, ``inspect``: ``/containers/ID/json``,
``images``: ``/images/json``). aiohttp costs about 0.15 ms a request and
0.15 ms a connection more than a bare protocol on this machine (its request
object, router, middleware chain, signals and writer), which put isoboxd
behind dockerd for commands that are only this exchange. The front parses
the request head, and when it is a plain ``GET``/``HEAD`` (HTTP/1.1, no body,
no upgrade) for one of the routes in ``FAST_ROUTES`` it runs the route's own
aiohttp handler, under the same ``errors_middleware``, with a stand-in
request (``FastRequest``: method, path, query, match_info, app: all those
handlers read) and writes the response itself, with Docker's headers. Any
other request, and everything after it on that connection, goes to aiohttp
unchanged: the front makes an aiohttp ``RequestHandler``, gives it the
transport (``set_protocol``) and the bytes it has not consumed, so
attach/exec hijacking, bodies, chunking and errors stay aiohttp's.

Requests on one connection are answered in order: while one is served the
front only buffers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from isobox.daemon import routes_containers, routes_images, routes_system
from isobox.daemon.api import (
    DOCKER_HEADERS,
    Handler,
    error_response,
    errors_middleware,
    log,
)

#: A head longer than this goes to aiohttp (and its limits).
MAX_HEAD = 8192
#: An idle connection is closed after this long, as aiohttp's keep-alive.
IDLE_TIMEOUT = 75.0

_VERSIONED = re.compile(r"/(v[0-9]+\.[0-9]+)(/.*)")
#: Printable ASCII but "#", from a "/".
_TARGET = re.compile(r"/[\x21\x22\x24-\x7e]*")

#: (methods, path pattern, handler); the pattern's groups are match_info.
FAST_ROUTES: list[tuple[frozenset[str], re.Pattern[str], Handler]] = [
    (frozenset({"GET", "HEAD"}), re.compile(r"/_ping"), routes_system.ping),
    (frozenset({"GET"}), re.compile(r"/version"), routes_system.version),
    (frozenset({"GET"}), re.compile(r"/containers/json"), routes_containers.list_),
    (frozenset({"GET"}), re.compile(r"/containers/(?P<id>[^/{}]+)/json"),
     routes_containers.inspect),
    (frozenset({"GET"}), re.compile(r"/images/json"), routes_images.list_),
    (frozenset({"GET"}), re.compile(r"/images/(?P<name>.+)/json"), routes_images.inspect),
]

_NO_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())
_SKIP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date"})
_FIXED_HEADERS = "".join(f"{k}: {v}\r\n" for k, v in DOCKER_HEADERS.items())
_REASONS = {s.value: s.phrase for s in HTTPStatus}


class FastRequest:
    """What the fast routes' handlers (and ``errors_middleware``) read of a
    request. A handler in ``FAST_ROUTES`` must read nothing else."""

    __slots__ = ("app", "match_info", "method", "path", "query")

    def __init__(self, app: web.Application, method: str, path: str,
                 query: MultiDictProxy[str], match_info: dict[str, str]) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.query = query
        self.match_info = match_info


class _Head:
    __slots__ = ("close", "handler", "match_info", "method", "path", "query")

    def __init__(self, method: str, path: str, query: MultiDictProxy[str],
                 match_info: dict[str, str], handler: Handler, close: bool) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.match_info = match_info
        self.handler = handler
        self.close = close


def parse_head(head: bytes) -> _Head | None:
    """The request if the front answers it, else None (aiohttp will)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or parts[0] not in ("GET", "HEAD"):
        return None
    method, target = parts[0], parts[1]
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[0] in " \t" or name[-1] in " \t":
            return None  # malformed or folded: aiohttp's 400
        lname = name.lower()
        if lname == "content-length":
            if value.strip() != "0":
                return None
        elif lname in ("transfer-encoding", "upgrade", "expect"):
            return None
        elif lname == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "upgrade" in tokens:
                return None
            close = close or "close" in tokens
    if _TARGET.fullmatch(target) is None:
        return None
    path, _, query_text = target.partition("?")
    if "%" in path or "\\" in path:
        return None  # aiohttp decodes the path: so would the front, for one route
    match_info: dict[str, str] = {}
    rest = path
    versioned = _VERSIONED.fullmatch(path)
    if versioned is not None:
        match_info["version"], rest = versioned.group(1), versioned.group(2)
    for methods, pattern, handler in FAST_ROUTES:
        found = pattern.fullmatch(rest)
        if found is not None:
            if method not in methods:
                return None  # aiohttp's 405
            match_info.update(found.groupdict())
            query = (MultiDictProxy(MultiDict(parse_qsl(query_text, keep_blank_values=True)))
                     if query_text else _NO_QUERY)
            return _Head(method, path, query, match_info, handler, close)
    return None


_date_cache: tuple[int, str] = (0, "")


def _date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def render(response: web.StreamResponse, head_only: bool, close: bool) -> bytes:
    """The response as aiohttp would write it (a bytes body, Content-Length)."""
    body = response.body if isinstance(response, web.Response) else None
    if body is None:
        body = b""
    if not isinstance(body, bytes | bytearray):
        raise TypeError(f"a fast route answered with a {type(body).__name__} body")
    status = response.status
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
    for name, value in response.headers.items():
        if name.lower() not in _SKIP_HEADERS and name not in DOCKER_HEADERS:
            lines.append(f"{name}: {value}\r\n")
    lines.append(_FIXED_HEADERS)
    lines.append(f"Content-Length: {len(body)}\r\nDate: {_date()}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    return head if head_only else head + bytes(body)


class Front(asyncio.Protocol):
    """One connection, until it is handed to aiohttp."""

    def __init__(self, app: web.Application, make_handler: Callable[[], asyncio.Protocol],
                 fronts: set[Front]) -> None:
        self._app = app
        self._make_handler = make_handler
        self._fronts = fronts
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy = False
        self._eof = False
        self._gone = False
        self._handed = False
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last answer
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._fronts.add(self)
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._idle = loop.call_at(self._last + IDLE_TIMEOUT, self._idle_check)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process()

    def eof_received(self) -> bool:
        self._eof = True
        if not self._busy:
            self._process()
        return True  # closed by _process once what is in flight is answered

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        self._fronts.discard(self)
        if self._idle is not None:
            self._idle.cancel()

    # -- serving ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._transport is not None and not self._gone:
            self._transport.close()

    def _idle_check(self) -> None:
        """One timer a connection, moved on only when it fires."""
        if self._handed or self._gone:
            return
        loop = asyncio.get_running_loop()
        due = self._last + IDLE_TIMEOUT
        if self._busy or due > loop.time():
            self._idle = loop.call_at(max(due, loop.time() + 1.0), self._idle_check)
        else:
            self.close()

    def _process(self) -> None:
        while not (self._busy or self._handed or self._gone):
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) >= MAX_HEAD or (self._eof and self._buffer):
                    self._hand_over()
                elif self._eof:
                    self.close()
                return
            if end >= MAX_HEAD:
                self._hand_over()
                return
            head = parse_head(bytes(self._buffer[:end]))
            if head is None:
                self._hand_over()
                return
            del self._buffer[:end + 4]
            self._busy = True
            self._task = asyncio.get_running_loop().create_task(self._serve(head))

    async def _serve(self, head: _Head) -> None:
        request = FastRequest(self._app, head.method, head.path, head.query, head.match_info)
        try:
            response = await errors_middleware(cast(web.Request, request), head.handler)
            data = render(response, head.method == "HEAD", head.close)
        except Exception as exc:
            log.exception("%s %s", head.method, head.path)
            head.close = True
            data = render(error_response(500, f"{type(exc).__name__}: {exc}"),
                          head.method == "HEAD", True)
        self._busy = False
        if self._gone or self._transport is None:
            return
        self._transport.write(data)
        if head.close:
            self.close()
            return
        self._last = asyncio.get_running_loop().time()
        self._process()

    def _hand_over(self) -> None:
        """From here on the connection is aiohttp's."""
        transport = self._transport
        assert transport is not None
        self._handed = True
        self._fronts.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        handler = self._make_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            handler.data_received(data)
        if self._eof and not handler.eof_received():
            transport.close()


class FrontSite(web.SockSite):
    """``SockSite`` with a ``Front`` on each connection."""

    def __init__(self, runner: web.BaseRunner, sock: Any, fronts: set[Front], **kwargs: Any
                 ) -> None:
        super().__init__(runner, sock, **kwargs)
        self._fronts = fronts

    async def start(self) -> None:
        # BaseSite.start registers the site with its runner; SockSite.start
        # would then create the server with aiohttp's own protocol.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        app = getattr(self._runner, "app", None)
        assert server is not None and isinstance(app, web.Application)
        fronts = self._fronts

        def protocol() -> asyncio.Protocol:
            return Front(app, server, fronts)

        self._server = await loop.create_server(
            protocol, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog)
