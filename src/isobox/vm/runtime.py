"""VM isolation behind the shim's Runtime interface.

``create`` forks the keeper (:mod:`isobox.vm.keeper`), which boots the
utility VM and creates the container in it; the keeper's pid is what the
shim reaps, and its exit status is the container's. The other operations are
control messages to the keeper. For a tty the keeper holds a host pty's
slave (raw: the guest's pty does the line discipline) and the shim gets the
master, as with a process container.
"""

from __future__ import annotations

import _socket as socket
import json
import os
import select
import signal
import time
import tty as ttymod

from isobox.errors import IsoboxError, NotRunning, Unavailable, for_exit_code
from isobox.linux import console
from isobox.linux.inherit import reset_signals

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

    from isobox.vm.settings import VmSettings

CONTROL_TIMEOUT = 30.0


class Created:
    __slots__ = ("master", "pid")

    def __init__(self, pid: int, master: int | None) -> None:
        self.pid = pid
        self.master = master


class VmRuntime:
    def __init__(self, directory: str, container_id: str, bundle: str,
                 settings: VmSettings, open_stdin: bool) -> None:
        self.dir = directory
        self.id = container_id
        self.bundle = bundle
        self.settings = settings
        self.open_stdin = open_stdin
        self.ctl: socket.socket | None = None
        self.keeper_pid = 0

    def _guest_config(self) -> dict[str, Any]:
        with open(os.path.join(self.bundle, "config.json"), "rb") as f:
            config: dict[str, Any] = json.loads(f.read())
        return config

    def create(self, stdio: tuple[int, int, int], tty: bool) -> Created:
        config = self._guest_config()
        self._close_ctl()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        master = slave = None
        try:
            if tty:
                master, slave = console.openpty()
                ttymod.setraw(slave)
                stdio = (slave, slave, slave)
            pid = os.fork()
        except BaseException:
            for fd in (master, slave):
                if fd is not None:
                    os.close(fd)
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            ours.close()
            reset_signals()  # the keeper sets its own
            from isobox.vm import keeper

            keeper.main(self.dir, self.id, self.settings, config, tty,
                        self.open_stdin, stdio, theirs)
        theirs.close()
        if slave is not None:
            os.close(slave)
        self.ctl = ours
        self.keeper_pid = pid
        # Two boots (one retry) plus setup, then the keeper has given up itself.
        reply = self._receive(2 * self.settings.boot_timeout + 180.0)
        if reply is None or not reply.get("ok"):
            if master is not None:
                os.close(master)
            self._close_ctl()
            if reply is None:
                os.kill(pid, signal.SIGKILL)
                message, code = "the VM keeper did not report in time", 125
            else:
                message = str(reply.get("error") or "VM setup failed")
                code = int(reply.get("exit_code") or 125)
            os.waitpid(pid, 0)
            self.keeper_pid = 0
            raise for_exit_code(message, code)
        return Created(pid, master)

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        assert self.ctl is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.ctl], [], [], left)
            if not ready:
                continue
            try:
                data = self.ctl.recv(65536)
            except OSError:
                data = b""
            if not data:
                return {"ok": False, "error": "the VM keeper exited", "kind": "NotRunning"}
            reply: dict[str, Any] = json.loads(data)
            return reply

    def _call(self, op: str, **fields: object) -> dict[str, Any]:
        if self.ctl is None:
            raise NotRunning("container is not running")
        try:
            self.ctl.send(json.dumps({"op": op, **fields}).encode())
        except OSError:
            raise NotRunning("container is not running") from None
        reply = self._receive(CONTROL_TIMEOUT)
        if reply is None:
            raise Unavailable(f"the VM did not answer {op} within {CONTROL_TIMEOUT:.0f}s")
        if not reply.get("ok"):
            message = str(reply.get("error") or f"{op} failed")
            if reply.get("kind") == "NotRunning" or "not running" in message:
                raise NotRunning(message)
            raise IsoboxError(message)
        return reply

    def start(self) -> None:
        self._call("start")

    def kill(self, sig: int, all_processes: bool = False) -> None:
        self._call("signal", signal=sig, all=all_processes)

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def delete(self, force: bool = False) -> None:
        """The VM down: the keeper kills QEMU and exits (the shim reaps it)."""
        if self.ctl is not None:
            try:
                self._call("delete")
            except IsoboxError:
                pass  # the keeper is gone already
        self._close_ctl()

    def _close_ctl(self) -> None:
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
