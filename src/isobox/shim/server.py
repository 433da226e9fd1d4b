"""The shim's request socket: one JSON line per request, one per reply;
attach turns a connection into a stream.

Every socket is non-blocking: a client that reads slowly gets its output
buffered, up to :data:`MAX_BACKLOG`, past which it is disconnected (the log
is complete whatever the clients do, and the container never waits on them).
"""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import json
import os

from isobox.errors import InvalidArgument, IsoboxError
from isobox.linux.loop import ERR, IN, OUT, Loop
from isobox.linux.unixsock import bind_private
from isobox.shim import frames
from isobox.shim.diag import describe, log

MAX_REQUEST = 64 * 1024
MAX_BACKLOG = 8 << 20
FLUSH_TIMEOUT = 5.0

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from isobox.shim.monitor import Monitor

REQUEST, ATTACH, WAITING = "request", "attach", "waiting"


class Conn:
    __slots__ = ("closed", "closing", "fd", "inbuf", "mode", "outbuf", "reading", "sock",
                 "stderr", "stdin", "stdout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.mode = REQUEST
        self.reading = True
        self.closing = False
        self.closed = False
        self.stdin = self.stdout = self.stderr = False


class Server:
    def __init__(self, path: str, loop: Loop, monitor: Monitor) -> None:
        self.path = path
        self.loop = loop
        self.monitor = monitor
        self.tty = monitor.cfg.tty
        self.conns: dict[int, Conn] = {}
        self.attached: list[Conn] = []
        self.throttled = False
        self.listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            bind_private(self.listener, path)
        except BaseException:
            self.listener.close()
            raise
        self.listener.listen(64)
        self.listener.setblocking(False)
        loop.add(self.listener.fileno(), IN, self._on_accept)
        self.ops: dict[str, Callable[[Conn, dict[str, Any]], dict[str, Any] | None]] = {
            "start": self._op_start, "attach": self._op_attach, "resize": self._op_resize,
            "kill": self._op_kill, "stop": self._op_stop, "wait": self._op_wait,
            "pause": self._op_pause, "resume": self._op_resume, "state": self._op_state,
        }

    # -- connections -----------------------------------------------------

    def _on_accept(self, _fd: int, _events: int) -> None:
        assert self.listener is not None
        while True:
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and friends: try again on the next event
                log(f"accept: {exc}")
                return
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            conn = Conn(sock)
            self.conns[conn.fd] = conn
            self.loop.add(conn.fd, IN, self._on_conn)

    def _on_conn(self, fd: int, events: int) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if events & OUT:
            self._flush(conn)
        if conn.closed:
            return
        if conn.reading and events & (IN | ERR):
            self._read(conn)
        elif events & ERR:
            self.close(conn)  # the client is gone both ways

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self.close(conn)
            return
        if not data:
            self._eof(conn)
            return
        if conn.mode == ATTACH:
            if conn.stdin:
                self.monitor.write_stdin(data)
            return
        if conn.mode != REQUEST:
            return  # waiting for a reply: nothing more to say
        conn.inbuf += data
        line, newline, rest = bytes(conn.inbuf).partition(b"\n")
        if not newline:
            if len(conn.inbuf) > MAX_REQUEST:
                self.reply(conn, _error(InvalidArgument("request too long")))
            return
        conn.inbuf.clear()
        self._dispatch(conn, line)
        if rest and conn.mode == ATTACH and conn.stdin:
            self.monitor.write_stdin(rest)

    def _eof(self, conn: Conn) -> None:
        conn.reading = False
        if conn.mode == ATTACH:
            self._update_mask(conn)
            if conn.stdin and self.monitor.cfg.stdin_once:
                self.monitor.close_stdin()
            return  # still receiving output
        self.close(conn)

    def _dispatch(self, conn: Conn, line: bytes) -> None:
        reply: dict[str, Any] | None
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise InvalidArgument("a request is a JSON object")
            op = self.ops.get(req.get("op"))  # type: ignore[arg-type]
            if op is None:
                raise InvalidArgument(f"unknown op {req.get('op')!r}")
            reply = op(conn, req)
        except IsoboxError as exc:
            reply = _error(exc)
        except (ValueError, TypeError, KeyError) as exc:
            reply = _error(InvalidArgument(f"bad request: {exc}"))
        except OSError as exc:
            reply = _error(IsoboxError(describe(exc)))
        if reply is not None:
            self.reply(conn, reply)

    def reply(self, conn: Conn, msg: dict[str, Any], close: bool = True) -> None:
        self.send(conn, json.dumps(msg).encode() + b"\n")
        if close and not conn.closed:
            conn.closing = True
            conn.reading = False
            self._flush(conn)

    def send(self, conn: Conn, data: bytes) -> None:
        if conn.closed:
            return
        conn.outbuf += data
        if len(conn.outbuf) > MAX_BACKLOG:
            log("an attached client fell too far behind: disconnected")
            self.close(conn)
            return
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        while conn.outbuf:
            try:
                n = conn.sock.send(conn.outbuf)
            except BlockingIOError:
                break
            except OSError:  # EPIPE, ECONNRESET: the client left
                self.close(conn)
                return
            del conn.outbuf[:n]
        if not conn.outbuf and conn.closing:
            self.close(conn)
            return
        self._update_mask(conn)

    def _update_mask(self, conn: Conn) -> None:
        reading = conn.reading and not (self.throttled and conn.mode == ATTACH and conn.stdin)
        self.loop.modify(conn.fd, (IN if reading else 0) | (OUT if conn.outbuf else 0))

    def close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.loop.remove(conn.fd)
        self.conns.pop(conn.fd, None)
        if conn in self.attached:
            self.attached.remove(conn)
        conn.sock.close()

    def close_listener(self) -> None:
        if self.listener is not None:
            self.loop.remove(self.listener.fileno())
            self.listener.close()
            self.listener = None
            _unlink(self.path)

    def flush_all(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """At exit: send what is still buffered (bounded), then close everything."""
        import time

        deadline = time.monotonic() + timeout
        for conn in list(self.conns.values()):
            left = deadline - time.monotonic()
            if conn.outbuf and left > 0:
                try:
                    conn.sock.settimeout(left)
                    conn.sock.sendall(conn.outbuf)
                except OSError:
                    pass
            self.close(conn)
        self.close_listener()

    # -- streams ---------------------------------------------------------

    def broadcast(self, stream: str, data: bytes) -> None:
        if not self.attached:
            return
        if self.tty:
            for conn in list(self.attached):
                if conn.stdout:
                    self.send(conn, data)
            return
        frame = frames.encode(frames.STREAM_IDS[stream], data)
        for conn in list(self.attached):
            if conn.stdout if stream == "stdout" else conn.stderr:
                self.send(conn, frame)

    def end_attached(self) -> None:
        """The run ended: each stream closes once its backlog is sent."""
        for conn in list(self.attached):
            self.attached.remove(conn)
            conn.closing = True
            conn.reading = False
            self._flush(conn)

    def throttle_stdin(self, on: bool) -> None:
        if on != self.throttled:
            self.throttled = on
            for conn in self.attached:
                if conn.stdin:
                    self._update_mask(conn)

    # -- operations ------------------------------------------------------

    def _op_start(self, _conn: Conn, _req: dict[str, Any]) -> dict[str, Any]:
        self.monitor.start()
        return {"ok": True}

    def _op_attach(self, conn: Conn, req: dict[str, Any]) -> None:
        self.monitor.check_attach()
        conn.stdin = bool(req.get("stdin"))
        conn.stdout = bool(req.get("stdout"))
        conn.stderr = bool(req.get("stderr"))
        self.reply(conn, {"ok": True}, close=False)
        if conn.closed:
            return
        conn.mode = ATTACH
        self.attached.append(conn)
        self._update_mask(conn)

    def _op_resize(self, _conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        self.monitor.resize(_int(req, "height"), _int(req, "width"))
        return {"ok": True}

    def _op_kill(self, _conn: Conn, req: dict[str, Any]) -> dict[str, Any]:
        self.monitor.kill(_int(req, "signal"), bool(req.get("all")))
        return {"ok": True}

    def _op_stop(self, conn: Conn, req: dict[str, Any]) -> None:
        sig = _int(req, "signal", self.monitor.cfg.stop_signal)
        timeout = _int(req, "timeout", self.monitor.cfg.stop_timeout)
        conn.mode = WAITING
        self.monitor.stop(conn, sig, timeout)

    def _op_wait(self, conn: Conn, _req: dict[str, Any]) -> None:
        conn.mode = WAITING
        self.monitor.wait(conn)

    def _op_pause(self, _conn: Conn, _req: dict[str, Any]) -> dict[str, Any]:
        self.monitor.pause()
        return {"ok": True}

    def _op_resume(self, _conn: Conn, _req: dict[str, Any]) -> dict[str, Any]:
        self.monitor.resume()
        return {"ok": True}

    def _op_state(self, _conn: Conn, _req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "state": self.monitor.state.as_dict()}


def _int(req: dict[str, Any], key: str, default: int | None = None) -> int:
    value = req.get(key, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{key} must be an integer")
    return value


def _error(exc: IsoboxError) -> dict[str, Any]:
    return {"ok": False, "error": str(exc), "kind": type(exc).__name__}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
