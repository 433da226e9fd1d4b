"""Processes' stdio as frames: output read and sent on the process's stream,
STDIN frames written to its stdin, and the end of a stream (OUTPUT_EOF, then
the exit event) once the process has exited and its output is drained.

While the connection is throttled, output fds are taken out of the poll set
(not just masked: a hung-up pipe would wake the loop for ever), so data
waits in the pipes and a chatty process blocks, as it would on a slow
terminal.
"""

from __future__ import annotations

import errno
import os

from isobox.agent.codes import exit_code
from isobox.agent.log import log
from isobox.agent.streams import Stream, StreamTable
from isobox.linux.loop import ERR, IN, OUT
from isobox.taskapi import frames
from isobox.taskapi.protocol import DRAIN_GRACE, EXIT

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.agent.connection import Connection
    from isobox.linux.loop import Loop

READ_SIZE = 1 << 16
STDIN_LIMIT = 64 << 20  # input the process does not read: beyond this it is dropped
FINAL_READS = 16  # reads of a stream's output after its drain grace ran out


class Relay:
    def __init__(self, loop: Loop, conn: Connection) -> None:
        self.loop = loop
        self.conn = conn
        self.streams = StreamTable()
        self.paused = False

    def attach(self, stream: Stream) -> None:
        """Relay a process's stdio from now on (the fds become ours to close)."""
        self.streams.add(stream)
        for fd in stream.fds():
            os.set_blocking(fd, False)
            self._update(stream, fd)

    def _update(self, stream: Stream, fd: int) -> None:
        """Poll fd for what it is waiting for now."""
        mask = 0
        if fd in stream.outputs and not self.paused:
            mask |= IN
        if fd == stream.stdin and stream.stdin_buf:
            mask |= OUT
        # A stdin pipe stays polled with no events: poll still reports its
        # reader going away (POLLERR).
        if mask or (fd == stream.stdin and fd not in stream.outputs):
            self.loop.add(fd, mask, self._on_event)  # or change its mask
        else:
            self.loop.remove(fd)

    def _on_event(self, fd: int, events: int) -> None:
        stream = self.streams.by_fd(fd)
        if stream is None:
            self.loop.remove(fd)
            return
        if fd == stream.stdin:
            if events & OUT:
                self._flush_stdin(stream)
            elif events & ERR and (fd not in stream.outputs or self.paused):
                self._drop_stdin(stream)  # nobody reads it any more
        if fd in stream.outputs and not self.paused and events & (IN | ERR):
            self._read(stream, fd)

    # -- output ---------------------------------------------------------

    def _read(self, stream: Stream, fd: int) -> bool:
        """One read; False at EOF (the fd is then closed) or when nothing was there."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: the pty's last slave closed
                log(f"reading the output of stream {stream.id}: {exc}")
            data = b""
        if not data:
            self._close_output(stream, fd)
            return False
        self.conn.send(stream.outputs[fd], stream.id, data)
        if self.conn.throttled and not self.paused:
            self.pause()
        return True

    def _close_output(self, stream: Stream, fd: int) -> None:
        del stream.outputs[fd]
        if fd == stream.stdin:
            stream.stdin = -1
            stream.stdin_buf.clear()
        if fd == stream.master:
            stream.master = -1
        self.loop.remove(fd)
        self.streams.forget_fd(fd)
        os.close(fd)
        if not stream.outputs and stream.exited:
            self._finish(stream)

    def pause(self) -> None:
        self.paused = True
        for stream in self.streams.all():
            for fd in stream.fds():
                self._update(stream, fd)

    def resume(self) -> None:
        self.paused = False
        for stream in self.streams.all():
            for fd in stream.fds():
                self._update(stream, fd)

    # -- input ----------------------------------------------------------

    def write_stdin(self, stream_id: int, data: bytes) -> None:
        stream = self.streams.find(stream_id)
        if stream is None or stream.stdin < 0 or stream.stdin_closing:
            return  # the process is gone or takes no input: as a closed pipe, it is dropped
        if len(stream.stdin_buf) + len(data) > STDIN_LIMIT:
            log(f"stream {stream_id} does not read its input: {len(data)} bytes dropped")
            return
        stream.stdin_buf += data
        self._flush_stdin(stream)

    def close_stdin(self, stream_id: int) -> None:
        stream = self.streams.find(stream_id)
        if stream is None or stream.stdin < 0 or stream.tty:
            return  # a tty's stdin is its terminal, which stays
        stream.stdin_closing = True
        if not stream.stdin_buf:
            self._drop_stdin(stream)

    def _flush_stdin(self, stream: Stream) -> None:
        fd = stream.stdin
        buf = stream.stdin_buf
        while buf:
            try:
                n = os.write(fd, buf)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: nobody reads the process's stdin any more
                self._drop_stdin(stream)
                return
            del buf[:n]
        if not buf and stream.stdin_closing:
            self._drop_stdin(stream)
        else:
            self._update(stream, fd)

    def _drop_stdin(self, stream: Stream) -> None:
        fd, stream.stdin = stream.stdin, -1
        stream.stdin_buf.clear()
        if fd < 0:
            return
        if fd in stream.outputs:
            self._update(stream, fd)  # a tty: the terminal stays for output
        else:
            self.loop.remove(fd)
            self.streams.forget_fd(fd)
            os.close(fd)

    # -- the end --------------------------------------------------------

    def exited(self, stream: Stream, status: int) -> None:
        """The process was reaped: end its stream once its output is drained."""
        stream.status = status
        if stream.stdin >= 0 and stream.stdin not in stream.outputs:
            self._drop_stdin(stream)
        if not stream.outputs:
            self._finish(stream)
        else:
            stream.drain_timer = self.loop.call_later(DRAIN_GRACE, lambda: self._grace_over(stream))

    def _grace_over(self, stream: Stream) -> None:
        stream.drain_timer = None
        if self.paused:  # the host is slow, not the process: wait for it
            stream.drain_timer = self.loop.call_later(DRAIN_GRACE,
                                                      lambda: self._grace_over(stream))
            return
        self.finish_now(stream)

    def finish_now(self, stream: Stream) -> None:
        """End the stream with what its output holds now; something (a
        background process) may still hold it open: that is not waited for."""
        for fd in list(stream.outputs):
            for _ in range(FINAL_READS):
                if not self._read(stream, fd):  # at EOF it closes fd
                    break
            if fd in stream.outputs:
                self._close_output(stream, fd)
        self._finish(stream)

    def _finish(self, stream: Stream) -> None:
        if stream.status is None or self.streams.find(stream.id) is not stream:
            return
        self.loop.cancel(stream.drain_timer)
        stream.drain_timer = None
        self._drop_stdin(stream)
        self.streams.remove(stream)
        self.conn.send(frames.OUTPUT_EOF, stream.id)
        self.conn.send_json(frames.EVENT, {"event": EXIT, "stream": stream.id,
                                           "exit_code": exit_code(stream.status)})
