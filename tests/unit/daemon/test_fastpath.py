"""The daemon's front for the hottest requests (``isobox.daemon.fastpath``)
and the reader thread (``Backend.read``), in process, on an empty root: the
front answers as aiohttp does, in order, and hands anything else over."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from isobox.daemon.api import json_bytes
from isobox.daemon.backend import Backend, NeedsWorker, Services
from isobox.daemon.fastpath import Front, FrontSite, parse_head
from isobox.daemon.server import make_app
from isobox.engine.config import load_config

# -- the request head --------------------------------------------------------------------


def head(first: str, *headers: str) -> bytes:
    return "\r\n".join([first, "Host: docker", *headers]).encode()


@pytest.mark.parametrize("first, path, info", [
    ("HEAD /_ping HTTP/1.1", "/_ping", {}),
    ("GET /v1.41/_ping HTTP/1.1", "/v1.41/_ping", {"version": "v1.41"}),
    ("GET /v1.50/containers/json?all=1 HTTP/1.1", "/v1.50/containers/json",
     {"version": "v1.50"}),
    ("GET /containers/abc/json HTTP/1.1", "/containers/abc/json", {"id": "abc"}),
    ("GET /v1.41/images/registry:5000/a/b:1/json HTTP/1.1", "/v1.41/images/registry:5000/a/b:1/json",
     {"version": "v1.41", "name": "registry:5000/a/b:1"}),
    ("GET /images/json HTTP/1.1", "/images/json", {}),
    ("GET /version HTTP/1.1", "/version", {}),
])
def test_fast_heads(first: str, path: str, info: dict[str, str]) -> None:
    parsed = parse_head(head(first, "User-Agent: Docker-Client/28.0.0 (linux)",
                             "Content-Length: 0"))
    assert parsed is not None
    assert parsed.path == path and parsed.match_info == info and not parsed.close


def test_query_and_close() -> None:
    parsed = parse_head(head("GET /containers/json?all=1&filters=%7B%7D&all=0 HTTP/1.1",
                             "Connection: close"))
    assert parsed is not None and parsed.close
    assert parsed.query.get("all") == "1" and parsed.query.getall("all") == ["1", "0"]
    assert parsed.query.get("filters") == "{}"


@pytest.mark.parametrize("raw", [
    head("POST /containers/json HTTP/1.1"),
    head("HEAD /containers/json HTTP/1.1"),          # aiohttp's 405
    head("GET /containers/json HTTP/1.0"),
    head("GET /containers/json HTTP/1.1", "Content-Length: 2"),
    head("GET /containers/json HTTP/1.1", "Transfer-Encoding: chunked"),
    head("GET /containers/json HTTP/1.1", "Upgrade: tcp", "Connection: Upgrade"),
    head("GET /containers/json HTTP/1.1", "Expect: 100-continue"),
    head("GET /containers/json HTTP/1.1", "X-A: 1", " folded"),
    head("GET /containers/json HTTP/1.1", "Bad header"),
    head("GET /containers/a%2Fb/json HTTP/1.1"),
    head("GET /containers/a/logs HTTP/1.1"),
    head("GET /containers/a/b/json HTTP/1.1"),
    head("GET /v1/containers/json HTTP/1.1"),
    head("GET //containers/json HTTP/1.1"),
    head("GET /containers/json  HTTP/1.1"),
    "GET /_ping HTTP/1.1\r\nX: \xe9".encode("latin-1"),
])
def test_heads_for_aiohttp(raw: bytes) -> None:
    assert parse_head(raw) is None


# -- the front against aiohttp ---------------------------------------------------------------


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[str, str, set[Front]]]:
    """The app on two sockets: through the front and through aiohttp alone."""
    config = load_config(str(tmp_path / "root"), env={"HOME": str(tmp_path)})
    app = make_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    fronts: set[Front] = set()
    paths = []
    for fast in (True, False):
        path = str(tmp_path / f"{'fast' if fast else 'plain'}.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.listen(16)
        site = FrontSite(runner, sock, fronts) if fast else web.SockSite(runner, sock)
        await site.start()
        paths.append(path)
    try:
        yield paths[0], paths[1], fronts
    finally:
        for front in list(fronts):
            front.close()
        await runner.cleanup()


async def exchange(path: str, data: bytes, answers: int, head_only: bool = False
                   ) -> list[tuple[str, dict[str, str], bytes]]:
    """Send ``data``, read ``answers`` responses (each with Content-Length)."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    out = []
    try:
        for _ in range(answers):
            status = (await reader.readline()).decode().rstrip("\r\n")
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().rstrip("\r\n")):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            size = 0 if head_only else int(headers.get("content-length", "0"))
            body = await reader.readexactly(size)
            out.append((status, headers, body))
    finally:
        writer.close()
    return out


def request(method: str, target: str, *extra: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SAME = ["/_ping", "/v1.41/_ping", "/v1.40/version", "/v1.99/_ping", "/containers/json?all=1",
        "/v1.50/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
        "/containers/json?limit=nope", "/containers/nope/json", "/v1.41/images/json",
        "/images/nope:1/json", "/images/json?filters=%7Bnot"]


def test_front_answers_as_aiohttp(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (fast, plain, fronts):
            for target in SAME:
                for method in ("GET", "HEAD") if target.endswith("_ping") else ("GET",):
                    raw = request(method, target)
                    (s1, h1, b1), = await exchange(fast, raw, 1, method == "HEAD")
                    (s2, h2, b2), = await exchange(plain, raw, 1, method == "HEAD")
                    assert s1 == s2, target
                    assert json.loads(b1 or b"null") == json.loads(b2 or b"null") \
                        if b1.startswith((b"{", b"[")) else b1 == b2, target
                    for name in ("content-type", "api-version", "ostype", "server",
                                 "docker-experimental", "builder-version", "swarm"):
                        assert h1.get(name) == h2.get(name), (target, name)
                    assert "date" in h1
            assert not fronts or all(isinstance(f, Front) for f in fronts)

    asyncio.run(main())


def test_pipelined_requests_in_order_then_aiohttp(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path) as (fast, _, fronts):
            data = (request("HEAD", "/_ping") + request("GET", "/v1.41/containers/json")
                    + request("POST", "/v1.41/auth", body=b"{}")
                    + request("GET", "/_ping"))
            answers = await exchange(fast, data, 4)
            assert [a[0] for a in answers] == [
                "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request",
                "HTTP/1.1 200 OK"]
            assert answers[1][2] == b"[]\n"
            assert json.loads(answers[2][2])["message"].startswith("serveraddress")
            assert answers[3][2] == b"OK"
            # Byte by byte, and Connection: close closes.
            reader, writer = await asyncio.open_unix_connection(fast)
            for byte in request("GET", "/_ping", "Connection: close"):
                writer.write(bytes([byte]))
                await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"OK")
            writer.close()
            await asyncio.sleep(0.05)
            assert not fronts

    asyncio.run(main())


def test_half_close_after_a_request(tmp_path: Path) -> None:
    """The front answers a request whose client half-closed (as dockerd);
    what it hands over gets aiohttp's own treatment (the connection closed)."""

    async def send(path: str, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(raw)
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return data

    async def main() -> None:
        async with serving(tmp_path) as (fast, plain, _fronts):
            data = await send(fast, request("GET", "/v1.41/containers/json"))
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"[]\n")
            raw = request("POST", "/v1.41/auth", body=b"{}")
            assert await send(fast, raw) == await send(plain, raw)

    asyncio.run(main())


# -- the reader thread ---------------------------------------------------------------------


def test_reader_busy_goes_to_the_pool_and_errors_come_back(tmp_path: Path) -> None:
    config = load_config(str(tmp_path / "root"), env={"HOME": str(tmp_path)})
    backend = Backend(config, workers=4)
    release = threading.Event()

    def slow(s: Services) -> str:
        release.wait(10)
        return threading.current_thread().name

    def fail(s: Services) -> None:
        raise KeyError("x")

    async def main() -> None:
        first = asyncio.ensure_future(backend.read(slow))
        await asyncio.sleep(0.05)
        start = time.monotonic()
        other = await backend.read(lambda s: threading.current_thread().name)
        assert other.startswith("engine_") and time.monotonic() - start < 5  # the pool
        release.set()
        assert await first == "engine-reader"
        with pytest.raises(KeyError):
            await backend.read(fail)
        # A cancelled read leaves the reader busy until it is done, then idle.
        release.clear()
        cancelled = asyncio.ensure_future(backend.read(slow))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.sleep(0.01)
        assert (await backend.read(lambda s: threading.current_thread().name)
                ).startswith("engine_")
        release.set()
        await asyncio.sleep(0.1)
        assert await backend.read(lambda s: threading.current_thread().name) == \
            "engine-reader"

    try:
        asyncio.run(main())
    finally:
        backend.close()


def test_json_bytes() -> None:
    assert json.loads(json_bytes({"a": [1, "é", None]})) == {"a": [1, "é", None]}
    assert json_bytes(float("nan")) in (b"null\n", b"NaN\n")
    assert json.loads(json_bytes(1 << 70)) == 1 << 70  # msgspec refuses it: json


def test_reads_on_the_loop_go_to_a_worker_at_the_first_write(tmp_path: Path) -> None:
    config = load_config(str(tmp_path / "root"), env={"HOME": str(tmp_path)})
    backend = Backend(config, workers=2)
    written: list[str] = []

    def read_then_write(s: Services) -> str:
        where = threading.current_thread().name
        s.containers.store.set_state("nope", {})  # refused on the loop
        written.append(where)
        return where

    async def main() -> None:
        loop_thread = threading.current_thread().name
        assert await backend.read_on_loop(lambda s: threading.current_thread().name) \
            == loop_thread
        assert await backend.read_on_loop(read_then_write) == "engine-reader"
        assert written == ["engine-reader"]
        with pytest.raises(NeedsWorker):
            assert backend._on_loop is not None
            backend._on_loop.containers.networking.detach(str(tmp_path))

    try:
        asyncio.run(main())
    finally:
        backend.close()
