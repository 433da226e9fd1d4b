"""Bridges between the engine's blocking byte streams and HTTP bodies: an
engine function that writes a tar (export, save, cp out) streams into the
response through a pipe; one that reads a tar (load, cp in) reads the
request body through a pipe. An error before the first byte is an error
response; after it, the connection is cut (as Docker does)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any, BinaryIO

from aiohttp import web

from isobox.daemon.api import backend
from isobox.daemon.backend import Services

CHUNK = 1 << 16


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


async def send_stream(request: web.Request, fn: Callable[[Services, BinaryIO], Any], *,
                      content_type: str = "application/x-tar",
                      headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Respond with what ``fn(services, out)`` writes to ``out``."""
    r, w = os.pipe()
    result: dict[str, BaseException] = {}

    def produce(services: Services) -> None:
        with open(w, "wb", buffering=CHUNK) as out:
            try:
                fn(services, out)
            except BrokenPipeError:
                pass
            except BaseException as exc:
                result["error"] = exc

    task = asyncio.ensure_future(backend(request).call(produce))
    response: web.StreamResponse | None = None
    try:
        while True:
            chunk = await backend(request).run(os.read, r, CHUNK)
            if response is None:
                if not chunk:
                    await task
                    if "error" in result:
                        raise result["error"]
                response = web.StreamResponse(status=200, headers=headers or {})
                response.content_type = content_type
                await response.prepare(request)
            if not chunk:
                break
            await response.write(chunk)
        await task
        await response.write_eof()
        return response
    finally:
        os.close(r)
        if not task.done():
            with contextlib.suppress(BaseException):
                await task


async def receive_stream(request: web.Request,
                         fn: Callable[[Services, BinaryIO], Any]) -> Any:
    """``fn(services, body)`` with the request body as a blocking stream."""
    r, w = os.pipe()

    def consume(services: Services) -> Any:
        with open(r, "rb", buffering=CHUNK) as body:
            try:
                return fn(services, body)
            finally:
                # Whatever fn left unread: let the pump finish.
                with contextlib.suppress(OSError, ValueError):
                    while body.read(CHUNK):
                        pass

    task = asyncio.ensure_future(backend(request).call(consume))
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            if task.done():
                break
            try:
                await backend(request).run(_write_all, w, chunk)
            except BrokenPipeError:
                break
    finally:
        os.close(w)
    return await task
