"""The processes the agent relays: one stream each, and the table that finds
a stream by its number, its process or one of its fds."""

from __future__ import annotations

from isobox.errors import Conflict, NotFound


class Stream:
    """One process: its number on the wire, its pid and the agent's ends of its stdio.

    ``outputs`` maps each fd the agent reads to the frame kind its data goes
    out as; ``stdin`` is the fd its input is written to (-1: none). With a
    tty, the pty master is both the only output and the stdin."""

    __slots__ = ("drain_timer", "id", "is_init", "master", "outputs", "pid", "status", "stdin",
                 "stdin_buf", "stdin_closing")

    def __init__(self, stream_id: int, pid: int, *, outputs: dict[int, int], stdin: int = -1,
                 master: int = -1, is_init: bool = False) -> None:
        self.id = stream_id
        self.pid = pid
        self.is_init = is_init
        self.outputs = outputs
        self.stdin = stdin
        self.master = master
        self.stdin_buf = bytearray()
        self.stdin_closing = False  # STDIN_EOF came: close once the buffer is written
        self.status: int | None = None  # wait status, once reaped
        self.drain_timer: int | None = None

    @property
    def exited(self) -> bool:
        return self.status is not None

    @property
    def tty(self) -> bool:
        return self.master >= 0

    def fds(self) -> set[int]:
        return {*self.outputs, self.stdin} - {-1}


class StreamTable:
    def __init__(self) -> None:
        self._by_id: dict[int, Stream] = {}
        self._by_pid: dict[int, Stream] = {}
        self._by_fd: dict[int, Stream] = {}

    def check_free(self, stream_id: int) -> None:
        if stream_id in self._by_id:
            raise Conflict(f"stream {stream_id} is in use")

    def add(self, stream: Stream) -> None:
        self.check_free(stream.id)
        self._by_id[stream.id] = stream
        self._by_pid[stream.pid] = stream
        for fd in stream.fds():
            self._by_fd[fd] = stream

    def get(self, stream_id: int) -> Stream:
        try:
            return self._by_id[stream_id]
        except KeyError:
            raise NotFound(f"no process on stream {stream_id}") from None

    def find(self, stream_id: int) -> Stream | None:
        return self._by_id.get(stream_id)

    def by_pid(self, pid: int) -> Stream | None:
        stream = self._by_pid.get(pid)
        return stream if stream is not None and not stream.exited else None

    def by_fd(self, fd: int) -> Stream | None:
        return self._by_fd.get(fd)

    def forget_fd(self, fd: int) -> None:
        self._by_fd.pop(fd, None)

    def remove(self, stream: Stream) -> None:
        if self._by_id.get(stream.id) is stream:
            del self._by_id[stream.id]
        if self._by_pid.get(stream.pid) is stream:
            del self._by_pid[stream.pid]
        for fd in [fd for fd, s in self._by_fd.items() if s is stream]:
            del self._by_fd[fd]

    def all(self) -> list[Stream]:
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
