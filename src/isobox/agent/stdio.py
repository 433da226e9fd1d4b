"""A process's stdio as the agent sets it up: pipes (or, with a tty, the pty
master the runtime hands back), the container's ends given to the runtime
and the agent's ends relayed."""

from __future__ import annotations

import os

from isobox.agent.streams import Stream
from isobox.taskapi.frames import STDERR, STDOUT


class Stdio:
    def __init__(self, tty: bool, open_stdin: bool) -> None:
        self.open_stdin = open_stdin
        self.outputs: dict[int, int] = {}  # our read ends -> frame kind
        self.stdin = -1  # our write end
        self._theirs: list[int] = []
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._theirs.append(null)
        #: the process's 0, 1 and 2 (a tty's slave replaces them in the container)
        self.container = (null, null, null)
        if tty:
            return
        try:
            out_r, out_w = os.pipe()
            self.outputs[out_r] = STDOUT
            self._theirs.append(out_w)
            err_r, err_w = os.pipe()
            self.outputs[err_r] = STDERR
            self._theirs.append(err_w)
            stdin = null
            if open_stdin:
                stdin, self.stdin = os.pipe()
                self._theirs.append(stdin)
        except BaseException:
            self.close()
            raise
        self.container = (stdin, out_w, err_w)

    def stream(self, stream_id: int, pid: int, master: int | None,
               is_init: bool = False) -> Stream:
        """The process has its ends: close ours of them, and hand over the rest."""
        self._close_theirs()
        if master is not None:
            stdin = master if self.open_stdin else -1
            stream = Stream(stream_id, pid, outputs={master: STDOUT}, stdin=stdin, master=master,
                            is_init=is_init)
        else:
            stream = Stream(stream_id, pid, outputs=self.outputs, stdin=self.stdin,
                            is_init=is_init)
        self.outputs = {}
        self.stdin = -1
        return stream

    def _close_theirs(self) -> None:
        for fd in self._theirs:
            os.close(fd)
        self._theirs = []

    def close(self) -> None:
        self._close_theirs()
        for fd in {*self.outputs, self.stdin} - {-1}:
            os.close(fd)
        self.outputs = {}
        self.stdin = -1
