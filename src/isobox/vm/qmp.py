"""Just enough QMP (QEMU's JSON monitor protocol) to pause and resume a VM:
the greeting, ``qmp_capabilities``, then one command at a time."""

from __future__ import annotations

import json
import os
import select
import time

from isobox.errors import IsoboxError, Unavailable

TIMEOUT = 5.0


class Qmp:
    """Over an already-connected stream socket fd (the keeper's end of the
    socketpair QEMU got as its monitor chardev)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""
        self._ready = False

    def _read_message(self, deadline: float) -> dict[str, object]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable("the VM's monitor did not answer in time")
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise Unavailable("the VM's monitor closed its connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise IsoboxError("QMP sent something that is not an object")
        return message

    def _command(self, name: str, deadline: float) -> dict[str, object]:
        os.write(self.fd, json.dumps({"execute": name}).encode() + b"\n")
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                continue  # STOP, RESUME...: not what we wait for
            if "error" in reply:
                error = reply["error"]
                desc = error.get("desc") if isinstance(error, dict) else error
                raise IsoboxError(f"QEMU refused {name}: {desc}")
            return reply

    def execute(self, name: str, timeout: float = TIMEOUT) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        if not self._ready:
            self._read_message(deadline)  # the greeting
            self._command("qmp_capabilities", deadline)
            self._ready = True
        return self._command(name, deadline)
