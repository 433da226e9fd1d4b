"""``exec`` into a VM-isolated container: a client of the keeper's
``D/vm.sock`` speaking the task API (one process, stream 1), relaying this
process's stdio; with a tty it puts the local terminal in raw mode and
forwards window size changes."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import termios
import time
import tty as ttymod
from collections.abc import Callable
from typing import Any

from isobox.errors import IsoboxError, NotRunning, Unavailable, for_exit_code
from isobox.linux.unixsock import ShortPath
from isobox.taskapi import frames
from isobox.vm.keeper import EXEC_SOCKET

STREAM = 1
REPLY_TIMEOUT = 60.0


class _Session:
    def __init__(self, directory: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with ShortPath(os.path.join(directory, EXEC_SOCKET)) as short:
                self.sock.connect(short)
        except OSError:
            self.sock.close()
            raise NotRunning("container is not running (its VM has no exec socket)") from None
        self.decoder = frames.Decoder()
        self.backlog: list[tuple[int, int, bytes]] = []
        self._id = 0

    def request(self, op: str, **fields: object) -> dict[str, Any]:
        self._id += 1
        self.sock.sendall(frames.encode_json(frames.REQUEST, {"id": self._id, "op": op,
                                                              **fields}))
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            for i, (kind, _stream, payload) in enumerate(self.backlog):
                if kind == frames.RESPONSE:
                    message = frames.decode_json(payload)
                    if message.get("id") == self._id:
                        del self.backlog[i]
                        return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"the VM did not answer {op} in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise NotRunning("the container's VM went away")
            self.backlog.extend(self.decoder.feed(chunk))


def call(directory: str, op: str, **fields: object) -> dict[str, Any]:
    """One request (``stats``, ``sync``) to the container's agent."""
    session = _Session(directory)
    try:
        reply = session.request(op, **fields)
    finally:
        session.sock.close()
    if not reply.get("ok"):
        raise for_exit_code(str(reply.get("error") or f"{op} failed"),
                            int(reply.get("exit_code") or 125))
    return reply


class _StdinWriter:
    """A file-like ``write`` that sends STDIN frames (a tar stream's sink)."""

    def __init__(self, session: _Session) -> None:
        self.session = session

    def write(self, data: bytes) -> int:
        self.session.sock.sendall(frames.encode_data(frames.STDIN, STREAM, bytes(data)))
        return len(data)

    def flush(self) -> None:
        pass


def put_archive(directory: str, target: str, owner: str | tuple[int, int],
                write_tar: Callable[[Any], None]) -> int:
    """Extract the tar stream ``write_tar`` writes into the directory
    ``target`` of the running container (``cp`` into it); the bytes copied."""
    session = _Session(directory)
    try:
        reply = session.request("extract", stream=STREAM, directory=target,
                                owner=owner if owner == "keep" else list(owner))
        if not reply.get("ok"):
            raise for_exit_code(str(reply.get("error") or "copy failed"),
                                int(reply.get("exit_code") or 125))
        session.sock.settimeout(None)
        try:
            write_tar(_StdinWriter(session))
        finally:
            session.sock.sendall(frames.encode(frames.STDIN_EOF, STREAM))
        out, err, code = _collect(session)
    finally:
        session.sock.close()
    if code != 0:
        raise IsoboxError(err.decode(errors="replace").strip() or "copy into the VM failed")
    return int(out.decode().strip() or 0)


def _collect(session: _Session) -> tuple[bytes, bytes, int]:
    """A process's output and exit code, once it has exited."""
    out, err = bytearray(), bytearray()
    pending = list(session.backlog)
    session.backlog.clear()
    while True:
        for kind, _stream, payload in pending:
            if kind == frames.STDOUT:
                out += payload
            elif kind == frames.STDERR:
                err += payload
            elif kind == frames.EVENT:
                message = json.loads(payload)
                if message.get("event") == "exit":
                    return bytes(out), bytes(err), int(message.get("exit_code") or 0)
        chunk = session.sock.recv(1 << 20)
        if not chunk:
            raise NotRunning("the container's VM went away")
        pending = session.decoder.feed(chunk)


def run(directory: str, process: dict[str, Any], *, tty: bool, interactive: bool,
        detach: bool) -> int:
    """Run ``process`` (an OCI process dict) in the container; its exit code."""
    session = _Session(directory)
    try:
        console_size = None
        if tty and os.isatty(0):
            from isobox.linux import console

            rows, cols = console.get_size(0)
            console_size = {"height": rows, "width": cols}
        reply = session.request("exec", stream=STREAM, process=process, tty=tty,
                                open_stdin=interactive and not detach, console=console_size)
        if not reply.get("ok"):
            raise for_exit_code(str(reply.get("error") or "exec failed"),
                                int(reply.get("exit_code") or 125))
        if detach:
            return 0
        return _relay(session, tty, interactive)
    finally:
        session.sock.close()


def _relay(session: _Session, tty: bool, interactive: bool) -> int:
    sock = session.sock
    sock.settimeout(None)
    saved = None
    if tty and os.isatty(0):
        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
        _send_size(sock)
        signal.signal(signal.SIGWINCH, lambda *_: _send_size(sock))
    try:
        stdin_open = interactive
        pending = list(session.backlog)
        session.backlog.clear()
        while True:
            for kind, _stream, payload in pending:
                if kind == frames.STDOUT:
                    _write_all(1, payload)
                elif kind == frames.STDERR:
                    _write_all(2, payload)
                elif kind == frames.EVENT:
                    message = json.loads(payload)
                    if message.get("event") == "exit":
                        return int(message.get("exit_code") or 0)
            pending = []
            watch = [sock] + ([0] if stdin_open else [])
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    sock.sendall(frames.encode_data(frames.STDIN, STREAM, data))
                else:
                    stdin_open = False
                    sock.sendall(frames.encode(frames.STDIN_EOF, STREAM))
            if sock in ready:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise NotRunning("the container's VM went away during exec")
                pending = session.decoder.feed(chunk)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)


def _send_size(sock: socket.socket) -> None:
    from isobox.linux import console

    try:
        rows, cols = console.get_size(0)
        sock.sendall(frames.encode_json(frames.REQUEST, {"id": 0, "op": "resize",
                                                         "stream": STREAM, "height": rows,
                                                         "width": cols}))
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def main(argv: list[str]) -> int:
    """``python -m isobox.vm.execclient DIR PROCESS_JSON [--tty] [--interactive]
    [--detach]``: for callers that relay a child's stdio (the API daemon)."""
    import sys

    flags = set(argv[2:])
    if len(argv) < 2 or flags - {"--tty", "--interactive", "--detach"}:
        print("usage: python -m isobox.vm.execclient DIR PROCESS_JSON [--tty] "
              "[--interactive] [--detach]", file=sys.stderr)
        return 125
    with open(argv[1], "rb") as f:
        process = json.loads(f.read())
    try:
        return run(argv[0], process, tty="--tty" in flags, interactive="--interactive" in flags,
                   detach="--detach" in flags)
    except Exception as exc:  # one line, the runtime's way
        print(f"isobox-runtime: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 125))


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
