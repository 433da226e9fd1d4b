"""Just enough QMP (QEMU's JSON monitor protocol) for the keeper and the
template maker: the greeting, ``qmp_capabilities``, then one command at a
time (pause, resume, migration, hotplug)."""

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

    def _command(self, name: str, deadline: float,
                 arguments: dict[str, object] | None = None,
                 fd: int | None = None) -> dict[str, object]:
        command: dict[str, object] = {"execute": name}
        if arguments:
            command["arguments"] = arguments
        data = json.dumps(command).encode() + b"\n"
        if fd is None:
            os.write(self.fd, data)
        else:  # SCM_RIGHTS along with the command (getfd)
            import socket

            carrier = socket.socket(fileno=os.dup(self.fd))
            try:
                socket.send_fds(carrier, [data], [fd])
            finally:
                carrier.close()
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                continue  # STOP, RESUME...: not what we wait for
            if "error" in reply:
                error = reply["error"]
                desc = error.get("desc") if isinstance(error, dict) else error
                raise IsoboxError(f"QEMU refused {name}: {desc}")
            return reply

    def execute(self, name: str, arguments: dict[str, object] | None = None,
                timeout: float = TIMEOUT, fd: int | None = None) -> dict[str, object]:
        """``fd``: a descriptor passed with the command (``getfd`` takes it)."""
        deadline = time.monotonic() + timeout
        if not self._ready:
            self._read_message(deadline)  # the greeting
            self._command("qmp_capabilities", deadline)
            self._ready = True
        return self._command(name, deadline, arguments, fd)

    def wait_migration(self, timeout: float) -> None:
        """Until the migration (out or in) has completed; raises if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.execute("query-migrate", timeout=max(deadline - time.monotonic(), 0.01))
            answer = reply.get("return")
            status = answer.get("status") if isinstance(answer, dict) else None
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                error = answer.get("error-desc") if isinstance(answer, dict) else None
                raise IsoboxError(f"VM state transfer {status}: {error or 'see the QEMU log'}")
            if time.monotonic() > deadline:
                raise Unavailable(f"VM state transfer did not complete within {timeout:.0f}s")
            time.sleep(0.005)
