"""The daemon's hold on the engine: one set of engine services per worker
thread (each like one ``isobox`` command: its own SQLite connections), the
blocking engine calls run off the event loop, and blocking iterators
(logs, events) turned into async ones that stop when the client goes.

Short reads (``ps``, ``inspect``, image lists) go to one dedicated reader
thread fed through a SimpleQueue and answered with ``call_soon_threadsafe``:
about 40 us a round trip against 90 us through ``run_in_executor`` (the
pool's lock, semaphore and work queue). A read that finds the reader busy
goes to the pool, so one slow read never holds up the others."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from isobox.engine.config import EngineConfig
from isobox.engine.containers import ContainerService
from isobox.engine.images import ImageService

T = TypeVar("T")

#: Threads for engine calls; long waits (wait, attach, logs -f) hold one each.
WORKERS = 64


class Services:
    """The engine services of one thread."""

    def __init__(self, config: EngineConfig) -> None:
        self.images = ImageService(config)
        self.containers = ContainerService(config, self.images)


class NeedsWorker(Exception):
    """An engine call on the event loop reached a write: it is run again on
    a worker thread."""


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise NeedsWorker


#: What a read may write on its way (reconciling a container with its
#: monitor's state, an AutoRemove removal): the event loop's services refuse
#: these before anything is done, and the call goes to a worker thread.
LOOP_REFUSES = {
    "containers": ("_monitor_lost", "remove", "event"),
    "containers.store": ("set_state", "set_request", "delete", "rename", "insert",
                         "add_event"),
    "containers.networking": ("detach",),
}


def loop_services(config: EngineConfig) -> Services:
    """Services for pure reads on the event loop: every write in
    ``LOOP_REFUSES`` raises ``NeedsWorker`` instead. Made on a worker (opening
    the databases takes a file lock), with the network manager open."""
    services = Services(config)
    for path, names in LOOP_REFUSES.items():
        target: Any = services
        for part in path.split("."):
            target = getattr(target, part)
        for name in names:
            if not callable(getattr(target, name, None)):
                raise AttributeError(f"{path}.{name}: not a method (LOOP_REFUSES is stale)")
            setattr(target, name, _refuse)
    with contextlib.suppress(Exception):
        services.containers.networking.manager  # noqa: B018  (opened here, not on the loop)
    return services


_Read = tuple[Callable[[Services], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class Backend:
    def __init__(self, config: EngineConfig, workers: int = WORKERS) -> None:
        self.config = config
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
        self._all: list[Services] = []
        self._lock = threading.Lock()
        self._reads: queue.SimpleQueue[_Read | None] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._reader_busy = False  # set and cleared on the event loop only
        self._on_loop: Services | None = None

    def services(self) -> Services:
        found: Services | None = getattr(self._local, "services", None)
        if found is None:
            found = Services(self.config)
            self._local.services = found
            with self._lock:
                self._all.append(found)
        return found

    async def call(self, fn: Callable[[Services], T]) -> T:
        """``fn(services)`` on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self.services()))

    async def read(self, fn: Callable[[Services], T]) -> T:
        """``fn(services)``, a short read, on the reader thread when it is
        idle, else on the pool (as ``call``)."""
        if self._reader_busy:
            return await self.call(fn)
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_loop, name="engine-reader",
                                            daemon=True)
            self._reader.start()
        future: asyncio.Future[Any] = loop.create_future()
        # Cleared by the reader's answer (on the loop), also when this
        # await is cancelled: the reader is busy until fn returns.
        self._reader_busy = True
        self._reads.put((fn, future, loop))
        result: T = await future
        return result

    def _read_loop(self) -> None:
        while (item := self._reads.get()) is not None:
            fn, future, loop = item
            settle: Callable[[Backend, asyncio.Future[Any], Any], None]
            try:
                result: Any = fn(self.services())
                settle = _settle_result
            except BaseException as exc:
                result, settle = exc, _settle_error
            try:
                loop.call_soon_threadsafe(settle, self, future, result)
            except RuntimeError:  # the loop is closed
                return

    async def read_on_loop(self, fn: Callable[[Services], T]) -> T:
        """``fn(services)`` right here on the event loop, for a read that
        is short and bounded (one container's inspect: SQLite reads in WAL
        never wait, a state file, a kill(pid, 0)): no thread hop at all.
        If it reaches a write (``LOOP_REFUSES``) it is run again on the
        reader thread, which writes as any worker does."""
        if self._on_loop is None:
            self._on_loop = await self.read(lambda s: loop_services(self.config))
            with self._lock:
                self._all.append(self._on_loop)
        try:
            return fn(self._on_loop)
        except NeedsWorker:
            return await self.read(fn)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """A plain blocking call (a read, a write) on a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args))

    async def iterate(self, make: Callable[[Services, threading.Event], Iterator[T]],
                      buffer: int = 64) -> AsyncIterator[T]:
        """Items of a blocking iterator made on a worker thread. When the
        consumer stops early the event is set: ``make`` should pass it to
        whatever polls, so that the thread ends too."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(buffer)
        stop = threading.Event()

        def put(item: tuple[int, Any]) -> None:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while not stop.is_set():
                try:
                    future.result(timeout=0.5)
                    return
                except TimeoutError:
                    continue
            future.cancel()

        def produce(services: Services) -> None:
            try:
                for item in make(services, stop):
                    if stop.is_set():
                        return
                    put((0, item))
                put((1, None))
            except BaseException as exc:  # handed to the consumer
                put((2, exc))

        task = loop.run_in_executor(self._pool, lambda: produce(self.services()))
        try:
            while True:
                kind, value = await queue.get()
                if kind == 1:
                    break
                if kind == 2:
                    raise value
                yield value
        finally:
            stop.set()
            await asyncio.shield(task) if task.done() else None

    def close(self) -> None:
        self._reads.put(None)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for services in self._all:
                try:
                    services.containers.close()
                    services.images.close()
                except Exception:
                    pass


def _settle_result(backend: Backend, future: asyncio.Future[Any], result: Any) -> None:
    backend._reader_busy = False
    if not future.done():
        future.set_result(result)


def _settle_error(backend: Backend, future: asyncio.Future[Any], exc: BaseException) -> None:
    backend._reader_busy = False
    if not future.done():
        future.set_exception(exc)
