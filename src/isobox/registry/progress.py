"""Progress of a pull or push: events, and three ways to show them.

Pull and push call a ``Progress`` (any callable taking a ``ProgressEvent``),
from several download threads at once: renderers lock. ``PlainProgress``
prints Docker's non-terminal lines, ``RichProgress`` draws bars on a
terminal, ``JSONProgress`` hands out the JSON objects of Docker's Engine API
(``{"status": "Downloading", "progressDetail": {...}, "id": "<short>"}``).
"""

from __future__ import annotations

import enum
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TextIO

from isobox.errors import IsoboxError
from isobox.oci import digest as digests
from isobox.oci import image_spec

# Docker draws no line for the image config, only for layers.
_CONFIG_TYPES = frozenset({image_spec.OCI_CONFIG, image_spec.DOCKER_CONFIG})


class EventKind(enum.Enum):
    RESOLVING = "resolving"          # ref: looking the tag up
    RESOLVED = "resolved"            # digest: what the tag points at
    BLOB_START = "blob-start"        # digest, total: a transfer begins
    BLOB_PROGRESS = "blob-progress"  # digest, current, total
    BLOB_DONE = "blob-done"          # digest: verified and stored / pushed
    BLOB_EXISTS = "blob-exists"      # digest: nothing to transfer
    BLOB_MOUNTED = "blob-mounted"    # digest, detail=source repository
    MANIFEST = "manifest"            # digest, total=size: the image is complete


@dataclass(frozen=True)
class ProgressEvent:
    kind: EventKind
    action: str      # "pull" or "push"
    #: As Docker prints it: the path when pulling (``library/busybox``), the
    #: full name when pushing (``docker.io/library/busybox``).
    repository: str
    tag: str = ""    # the tag (or ``@digest``) asked for
    digest: str = ""
    media_type: str = ""
    current: int = 0
    total: int = 0
    detail: str = ""

    @property
    def short_id(self) -> str:
        return digests.short_id(self.digest) if self.digest else ""

    @property
    def is_layer(self) -> bool:
        return bool(self.digest) and self.media_type not in _CONFIG_TYPES


class Progress(Protocol):
    def __call__(self, event: ProgressEvent, /) -> None: ...


def no_progress(event: ProgressEvent) -> None:
    """The progress sink that shows nothing."""


def docker_status(event: ProgressEvent) -> dict[str, Any] | None:
    """The Engine API's JSON progress object for an event (None: no line)."""
    pulling = event.action == "pull"
    if event.kind is EventKind.RESOLVING:
        if pulling:
            return {"status": f"Pulling from {event.repository}", "id": event.tag}
        return {"status": f"The push refers to repository [{event.repository}]"}
    if event.kind is EventKind.RESOLVED:
        return None
    if event.kind is EventKind.MANIFEST:
        if pulling:
            return {"status": f"Digest: {event.digest}"}
        tag = event.tag or "latest"
        return {"status": f"{tag}: digest: {event.digest} size: {event.total}",
                "progressDetail": {}, "aux": {"Tag": tag, "Digest": event.digest,
                                              "Size": event.total}}
    if not event.is_layer:
        return None
    line: dict[str, Any] = {"id": event.short_id, "progressDetail": {}}
    if event.kind is EventKind.BLOB_START:
        line["status"] = "Pulling fs layer" if pulling else "Preparing"
    elif event.kind is EventKind.BLOB_PROGRESS:
        line["status"] = "Downloading" if pulling else "Pushing"
        line["progressDetail"] = {"current": event.current, "total": event.total}
    elif event.kind is EventKind.BLOB_DONE:
        line["status"] = "Pull complete" if pulling else "Pushed"
    elif event.kind is EventKind.BLOB_EXISTS:
        line["status"] = "Already exists" if pulling else "Layer already exists"
    elif event.kind is EventKind.BLOB_MOUNTED:
        line["status"] = f"Mounted from {event.detail}"
    return line


class JSONProgress:
    """Calls ``emit`` with Docker's JSON progress objects (for the Engine API)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self._emit = emit
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        line = docker_status(event)
        if line is not None:
            with self._lock:
                self._emit(line)


def json_stream(operation: Callable[[Progress], object], *,
                poll: float = 0.1) -> Iterator[dict[str, Any]]:
    """Run ``operation(progress)`` in a thread and yield Docker's JSON progress
    objects as they come, for a streaming Engine API answer. An isobox error
    ends the stream with Docker's error object (``{"errorDetail": {"message":
    ...}, "error": ...}``); anything else is raised."""
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            operation(JSONProgress(lines.put))
        except BaseException as exc:  # handed to the consumer below
            failure.append(exc)

    worker = threading.Thread(target=run, name="isobox-progress", daemon=True)
    worker.start()
    while worker.is_alive() or not lines.empty():
        try:
            yield lines.get(timeout=poll)
        except queue.Empty:
            continue
    worker.join()
    if failure:
        if not isinstance(failure[0], IsoboxError):
            raise failure[0]
        yield {"errorDetail": {"message": str(failure[0])}, "error": str(failure[0])}


class PlainProgress:
    """Docker's lines when output is not a terminal: no byte counts."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is EventKind.BLOB_PROGRESS:
            return
        line = docker_status(event)
        if line is None:
            return
        text = f"{line['id']}: {line['status']}" if line.get("id") else line["status"]
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class RichProgress:
    """Progress bars on a terminal, one per layer. Use as a context manager."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self._console = Console(file=stream)
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(),
                              DownloadColumn(), TransferSpeedColumn(),
                              console=self._console, transient=False)
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._bars.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bars.stop()

    def __call__(self, event: ProgressEvent) -> None:
        line = docker_status(event)
        with self._lock:
            if not event.is_layer or event.kind is EventKind.MANIFEST:
                if line is not None:
                    self._console.print(line["status"])
                return
            task = self._tasks.get(event.digest)
            label = f"{event.short_id}: {line['status'] if line else ''}"
            if task is None:
                task = self._bars.add_task(label, total=event.total or None)
                self._tasks[event.digest] = task
            if event.kind is EventKind.BLOB_PROGRESS:
                self._bars.update(task, description=label, completed=event.current,
                                  total=event.total or None)
            elif event.kind in (EventKind.BLOB_DONE, EventKind.BLOB_EXISTS,
                                EventKind.BLOB_MOUNTED):
                total = event.total or self._bars.tasks[task].total or 1
                self._bars.update(task, description=label, completed=total, total=total)
            else:
                self._bars.update(task, description=label)


def terminal_progress(stream: TextIO) -> RichProgress | PlainProgress:
    """Bars when ``stream`` is a terminal, plain lines otherwise. Both work
    as context managers (``with terminal_progress(sys.stdout) as p: ...``)."""
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)
