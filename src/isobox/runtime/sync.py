"""Messages between the runtime and the processes it forks.

A SOCK_SEQPACKET socketpair keeps message boundaries; each message is a
small JSON object with a type ``t``. A child that fails sends ``error``
with a one-line message and exits, so the runtime can report it.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import json

from isobox.errors import IsoboxError, Unavailable

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any


class ChildFailed(IsoboxError):
    pass


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def send(self, kind: str, **fields: Any) -> None:
        fields["t"] = kind
        self.sock.send(json.dumps(fields).encode())

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        try:
            raw = self.sock.recv(65536)
        except TimeoutError:
            raise Unavailable(f"container process did not answer within {timeout}s") from None
        if not raw:
            return {"t": "eof"}
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def expect(self, kind: str, timeout: float | None = None) -> dict[str, Any]:
        msg = self.recv(timeout)
        if msg["t"] == "error":
            raise ChildFailed(msg.get("msg", "container process failed"))
        if msg["t"] != kind:
            if msg["t"] == "eof":
                raise ChildFailed(f"container process exited before {kind}")
            raise ChildFailed(f"unexpected message {msg['t']!r} while waiting for {kind!r}")
        return msg

    def fail(self, exc: BaseException) -> None:
        try:
            self.send("error", msg=describe(exc))
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename is not None and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
        return text
    return str(exc) or exc.__class__.__name__
