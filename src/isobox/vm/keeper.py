"""The VM keeper: one process per running VM-isolated container.

The shim's :class:`isobox.vm.runtime.VmRuntime` forks it for each run. It
starts QEMU (its child, killed with it), waits for the guest agent, sets the
container up through the task API (storage, network, create), then relays
the container's stdio, serves exec sessions on ``D/vm.sock`` and exits with
the container's exit code once the VM is down. To the shim it is what a
container init is to a process container: a pid to reap, an exit status,
stdio fds. The engine never talks to QEMU; nothing in the guest can reach the
monitor or the agent link (socketpairs, no path).

Control messages from the shim (SOCK_SEQPACKET, one JSON object each, one
reply each): ``start``, ``signal`` {signal, all}, ``pause``, ``resume``,
``stats``, ``sync``, ``delete``.
"""

from __future__ import annotations

import _socket as socket
import json
import os
import select
import signal
import time

from isobox.errors import IsoboxError, Unavailable, for_exit_code
from isobox.linux import console
from isobox.linux.guard import close_fds_except
from isobox.linux.loop import ERR, IN, OUT, Loop
from isobox.linux.unixsock import bind_private
from isobox.taskapi import frames
from isobox.vm import launch, qemu, template
from isobox.vm.channel import Channel, ChannelClosed
from isobox.vm.initscript import WRITABLE_DISK_FLAG
from isobox.vm.qmp import Qmp

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from isobox.vm.settings import VmSettings

INIT_STREAM = 1
EXEC_SOCKET = "vm.sock"
SETUP_TIMEOUT = 120.0  # storage + network + create, under TCG
SHUTDOWN_GRACE = 3.0  # the agent's poweroff, before QEMU is killed
KILL_GRACE = 5.0  # SIGKILL through the agent, before QEMU is killed
AGENT_FD, QMP_FD = 3, 4
VM_LOST_EXIT = 255  # the VM ended without the container's exit status
CLIENT_BUFFER_MAX = 16 << 20


def log(message: str) -> None:
    os.write(2, f"isobox-vm: {message}\n".encode())


class Keeper:
    def __init__(self, directory: str, container_id: str, settings: VmSettings,
                 config: dict[str, Any], tty: bool, open_stdin: bool,
                 stdio: tuple[int, int, int], ctl: socket.socket) -> None:
        self.dir = directory
        self.id = container_id
        self.settings = settings
        self.config = config
        self.tty = tty
        self.open_stdin = open_stdin
        self.stdio = stdio  # tty: the pty slave three times
        self.ctl = ctl
        self.qemu_pid = 0
        self.restored = False  #: from a template (its NIC has the template's MAC)
        self.channel: Channel | None = None
        self.qmp: Qmp | None = None
        self.loop = Loop()
        self.exit_code: int | None = None
        self.shutdown_timer: int | None = None
        self.kill_timer: int | None = None
        self.paused = False
        self.output_open = True
        self.stdin_fd = -1
        self.listener: Any = None  # a socket.socket
        self.sessions: dict[int, ExecSession] = {}  # client fd -> session
        self.streams: dict[int, tuple[ExecSession, int]] = {}  # agent stream -> client's
        self._next_stream = INIT_STREAM

    # -- boot --------------------------------------------------------------

    def _spawn_qemu(self, spec: qemu.VmSpec, extra_fds: dict[int, int] | None = None) -> None:
        agent_ours, agent_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        qmp_ours, qmp_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        spec.agent_fd, spec.qmp_fd = AGENT_FD, QMP_FD
        try:
            argv = qemu.command(spec, self.settings.qemu)
            self.qemu_pid = launch.spawn(argv, {AGENT_FD: agent_theirs.fileno(),
                                                QMP_FD: qmp_theirs.fileno(), **(extra_fds or {})})
        except BaseException:
            agent_ours.close()
            qmp_ours.close()
            raise
        finally:
            agent_theirs.close()
            qmp_theirs.close()
        self.channel = Channel(agent_ours.detach())
        self.qmp = Qmp(qmp_ours.detach())

    def _cold_spec(self) -> qemu.VmSpec:
        s = self.settings
        return qemu.VmSpec(
            kernel=s.kernel, initrd=s.initrd, memory_mb=s.memory_mb, cpus=s.cpus,
            accel=s.accel, agent_fd=AGENT_FD, qmp_fd=QMP_FD, console_log=s.console_log,
            disks=[qemu.Disk(d.path, d.serial, d.readonly) for d in s.disks],
            shares=[qemu.Share(sh.tag, sh.path, sh.readonly) for sh in s.shares],
            nics=[qemu.Nic(n.tap, n.mac) for n in s.nics],
            cmdline_extra=WRITABLE_DISK_FLAG if any(d.role == "upper" for d in s.disks) else "")

    def _kill_qemu(self) -> None:
        if self.qemu_pid:
            launch.kill(self.qemu_pid)

    def _reap_qemu(self, block: bool) -> int | None:
        """QEMU's wait status once it has exited (None while it runs)."""
        if not self.qemu_pid:
            return None
        status = launch.reap(self.qemu_pid, block)
        if status is not None:
            self.qemu_pid = 0
        return status

    def _end_qemu(self) -> None:
        """Kill QEMU, reap it and close the links to it (a failed boot)."""
        self._kill_qemu()
        self._reap_qemu(block=True)
        self._drop_channel()

    def _drop_channel(self) -> None:
        for end in (self.channel, self.qmp):
            if end is not None:
                try:
                    os.close(end.fd)
                except OSError:
                    pass
        self.channel = None
        self.qmp = None

    def _qemu_exited(self) -> bool:
        return self._reap_qemu(block=False) is not None

    def boot(self) -> None:
        """QEMU up and the agent answering: restored from a template when
        the VM fits one, else booted, retried once: a boot that hangs (early
        timer calibration under TCG) is killed, never waited on."""
        if self._restore():
            return
        timeout = self.settings.boot_timeout
        for attempt in (1, 2):
            started = time.monotonic()
            self._spawn_qemu(self._cold_spec())
            assert self.channel is not None
            try:
                ready = launch.wait_ready(self.channel, self._qemu_exited, timeout)
            except Unavailable:
                self._end_qemu()
                raise Unavailable("QEMU exited while the VM was booting (see the console log "
                                  f"{self.settings.console_log or 'in shim.log'})") from None
            except BaseException:
                self._end_qemu()
                raise
            if ready:
                log(f"agent ready after {time.monotonic() - started:.2f}s "
                    f"({self.settings.accel})")
                return
            self._end_qemu()
            if attempt == 1:
                log(f"the VM did not reach its agent within {timeout:.0f}s: retrying once")
        raise Unavailable(f"the VM did not start: its agent did not answer within "
                          f"{timeout:.0f}s, twice")

    def _restore(self) -> bool:
        """Start the VM from its shape's template (made first if there is
        none); False when it has no shape, or the restore failed (said in
        the log), for a cold boot instead."""
        shape = template.shape_of(self.settings)
        if shape is None:
            return False
        started = time.monotonic()
        try:
            saved = template.ensure(shape, self.settings.boot_timeout)
        except (IsoboxError, OSError) as exc:
            log(f"no VM template ({exc}): booting")
            return False
        made = time.monotonic()
        try:
            state = os.open(saved.state, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:  # replaced by a newer template meanwhile
            log(f"the VM template went away ({exc}): booting")
            return False
        try:
            self._spawn_qemu(template.restore_spec(shape, saved, self.settings),
                             {template.INCOMING_FD: state})
        finally:
            os.close(state)
        assert self.qmp is not None
        try:
            template.receive(self.qmp, self.settings.boot_timeout)
            for index, disk in enumerate(self.settings.disks):
                for command, arguments in qemu.hotplug_disk_commands(
                        index, qemu.Disk(disk.path, disk.serial, disk.readonly)):
                    self.qmp.execute(command, arguments)
            self.call("wake", template.wake_request(), timeout=self.settings.boot_timeout)
        except (IsoboxError, OSError, ValueError) as exc:
            log(f"restoring the VM template failed ({exc}): discarding it and booting")
            self._end_qemu()
            template.discard(saved)
            return False
        self.restored = True
        log(f"restored from template {saved.name} in {time.monotonic() - made:.2f}s"
            + (f" (made in {made - started:.2f}s)" if made - started > 0.5 else ""))
        return True

    def call(self, op: str, fields: dict[str, object],
             timeout: float = SETUP_TIMEOUT) -> dict[str, Any]:
        """One request, answered before anything else happens (setup only)."""
        assert self.channel is not None
        box: list[dict[str, object]] = []
        self.channel.request(op, box.append, **fields)
        deadline = time.monotonic() + timeout
        poller = select.poll()
        while not box:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unavailable(f"the VM's agent did not answer {op} within {timeout:.0f}s")
            poller.register(self.channel.fd, IN | (OUT if self.channel.out else 0))
            events = poller.poll(int(left * 1000) + 1)
            poller.unregister(self.channel.fd)
            if not events:
                continue
            try:
                self.channel.flush()
                for kind, stream, payload in self.channel.receive():
                    self._on_frame(kind, stream, payload)
            except ChannelClosed:
                raise Unavailable(f"the VM stopped during {op}") from None
        reply = box[0]
        if not reply.get("ok"):
            raise for_exit_code(str(reply.get("error") or f"{op} failed"),
                                int(str(reply.get("exit_code") or 125)))
        return reply

    def setup(self) -> int:
        s = self.settings
        self.call("storage", s.storage_request())
        if s.nics or s.hostname or s.sysctls:
            self.call("network", s.network_request(
                template.TEMPLATE_MAC if self.restored else None))
        size = None
        if self.tty:
            rows, cols = console.get_size(self.stdio[0])
            if rows and cols:
                size = {"height": rows, "width": cols}
        reply = self.call("create", {"stream": INIT_STREAM, "container_id": self.id,
                                     "config": self.config, "tty": self.tty,
                                     "open_stdin": self.open_stdin, "console": size})
        return int(reply.get("pid") or 0)

    # -- serving -----------------------------------------------------------

    def serve(self) -> int:
        """Relay until the VM is down; returns the container's exit code."""
        assert self.channel is not None
        loop = self.loop
        sigs = (signal.SIGCHLD, signal.SIGWINCH) if self.tty else (signal.SIGCHLD,)
        loop.handle_signals(sigs, self._on_signal)
        loop.add(self.channel.fd, IN, self._on_agent)
        loop.add(self.ctl.fileno(), IN, self._on_ctl)
        if self.open_stdin:
            self.stdin_fd = self.stdio[0]
            os.set_blocking(self.stdin_fd, False)
            loop.add(self.stdin_fd, IN, self._on_stdin)
        self._listen()
        loop.call_later(0, self._check_qemu)  # an exit before the handler was set
        loop.run()
        return VM_LOST_EXIT if self.exit_code is None else self.exit_code

    def _listen(self) -> None:
        import socket as full_socket  # accept() lives in socket.py

        listener = full_socket.socket(full_socket.AF_UNIX, full_socket.SOCK_STREAM)
        bind_private(listener, os.path.join(self.dir, EXEC_SOCKET))  # a deep directory
        listener.listen(16)
        listener.setblocking(False)
        self.listener = listener
        self.loop.add(listener.fileno(), IN, self._on_accept)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            self._check_qemu()
        elif sig == signal.SIGWINCH and self.output_open:
            rows, cols = console.get_size(self.stdio[0])
            self._request("resize", _ignore, stream=INIT_STREAM, height=rows, width=cols)

    def _check_qemu(self) -> None:
        status = self._reap_qemu(block=False)
        if status is None:
            return
        if self.exit_code is None:
            if os.WIFSIGNALED(status):
                self.exit_code = 128 + os.WTERMSIG(status)
                log(f"QEMU was killed by signal {os.WTERMSIG(status)}")
            else:
                self.exit_code = VM_LOST_EXIT
                log("the VM stopped before the container exited (guest panic or poweroff)")
        self.loop.stop()

    def _request(self, op: str, reply: Any, **fields: object) -> None:
        if self.channel is None:
            reply({"ok": False, "error": "container is not running", "kind": "NotRunning"})
            return
        try:
            self.channel.request(op, reply, **fields)
        except ChannelClosed:
            reply({"ok": False, "error": "container is not running", "kind": "NotRunning"})
            return
        self._want_flush()

    def _want_flush(self) -> None:
        if self.channel is not None and self.channel.out:
            self.loop.modify(self.channel.fd, IN | OUT)

    def _on_agent(self, fd: int, events: int) -> None:
        channel = self.channel
        assert channel is not None
        try:
            if events & OUT:
                channel.flush()
            if events & (IN | ERR):
                for kind, stream, payload in channel.receive():
                    self._on_frame(kind, stream, payload)
        except (ChannelClosed, frames.ProtocolError) as exc:
            log(f"agent link lost: {exc}")
            self.loop.remove(fd)
            channel.fail_pending("the VM is gone")
            self.channel = None
            # QEMU is on its way out (poweroff, panic): let it exit by itself,
            # so its status says how it ended; a QEMU that lingers is killed.
            if self.shutdown_timer is None:
                self.shutdown_timer = self.loop.call_later(SHUTDOWN_GRACE, self._kill_qemu)
            return
        if self.channel is not None:
            self.loop.modify(fd, IN | (OUT if channel.out else 0))
        self._throttle()

    def _throttle(self) -> None:
        """Stop reading input while the agent link is backed up."""
        if self.channel is None:
            return
        mask = 0 if self.channel.congested else IN
        if self.stdin_fd >= 0:
            self.loop.modify(self.stdin_fd, mask)
        for client_fd in self.sessions:
            self.loop.modify(client_fd, mask | self.sessions[client_fd].out_mask())

    def _on_frame(self, kind: int, stream: int, payload: bytes) -> None:
        if kind == frames.EVENT:  # events name their process in the message
            target_stream = frames.decode_json(payload).get("stream")
            stream = target_stream if isinstance(target_stream, int) else INIT_STREAM
        if stream == INIT_STREAM:
            self._on_init_frame(kind, payload)
            return
        target = self.streams.get(stream)
        if target is None:
            return  # a session that went away
        session, client_stream = target
        if kind == frames.EVENT:
            message = frames.decode_json(payload)
            message["stream"] = client_stream
            session.send(frames.encode_json(frames.EVENT, message, client_stream))
            if message.get("event") == "exit":
                del self.streams[stream]
                session.streams.discard(stream)
                session.finished = True
                self._flush_session(session)
        else:
            session.send(frames.encode(kind, client_stream, payload))
            self._flush_session(session)

    def _on_init_frame(self, kind: int, payload: bytes) -> None:
        if kind == frames.STDOUT:
            self._write_out(self.stdio[1], payload)
        elif kind == frames.STDERR:
            self._write_out(self.stdio[2], payload)
        elif kind == frames.OUTPUT_EOF:
            self._close_output()
        elif kind == frames.EVENT:
            message = frames.decode_json(payload)
            if message.get("event") == "exit" and message.get("stream") == INIT_STREAM:
                self._close_output()
                code = message.get("exit_code")
                self.exit_code = code if isinstance(code, int) else VM_LOST_EXIT
                if self.settings.ephemeral:
                    self._kill_qemu()  # nothing in it to keep (--rm, no writable disk)
                else:
                    self._shutdown()

    def _write_out(self, fd: int, data: bytes) -> None:
        if not self.output_open:
            return
        try:
            os.set_blocking(fd, True)  # the shim drains its pipes; waiting is back-pressure
            while data:
                data = data[os.write(fd, data):]
        except OSError as exc:
            log(f"container output dropped: {exc}")

    def _close_output(self) -> None:
        if not self.output_open:
            return
        self.output_open = False
        if self.stdin_fd >= 0:
            self.loop.remove(self.stdin_fd)
            self.stdin_fd = -1
        for fd in set(self.stdio):
            try:
                os.close(fd)
            except OSError:
                pass

    def _shutdown(self) -> None:
        if self.shutdown_timer is not None:
            return
        self._request("shutdown", _ignore)
        self.shutdown_timer = self.loop.call_later(SHUTDOWN_GRACE, self._kill_qemu)

    def _on_stdin(self, fd: int, events: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: the pty's master side closed
        if self.channel is None:
            return
        try:
            if data:
                self.channel.data(frames.STDIN, INIT_STREAM, data)
            else:
                self.loop.remove(fd)
                self.stdin_fd = -1
                if not self.tty:
                    self.channel.send(frames.encode(frames.STDIN_EOF, INIT_STREAM))
        except ChannelClosed:
            return
        self._want_flush()
        self._throttle()

    # -- the shim's control messages ----------------------------------------

    def _on_ctl(self, fd: int, events: int) -> None:
        try:
            data = self.ctl.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log("the monitor went away: stopping the VM")
            self.loop.remove(fd)
            self._kill_qemu()
            return
        try:
            message = json.loads(data)
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            self._reply({"ok": False, "error": "bad control message"})
            return
        if op in ("start",):
            self._request("start", self._reply, stream=INIT_STREAM)
        elif op == "signal":
            sig = int(message.get("signal") or signal.SIGTERM)
            if sig == signal.SIGKILL and self.paused:
                self._kill_qemu()  # a frozen guest cannot act: SIGKILL is the VM's end
                self._reply({"ok": True})
                return
            # A paused guest answers after resume (which the monitor sends next).
            reply = _ignore if self.paused else self._reply
            self._request("signal", reply, stream=INIT_STREAM, signal=sig,
                          all=bool(message.get("all")))
            if self.paused:
                self._reply({"ok": True})
            if sig == signal.SIGKILL and self.kill_timer is None:
                # The agent kills and syncs; a guest that cannot is ended from outside.
                self.kill_timer = self.loop.call_later(KILL_GRACE, self._kill_qemu)
        elif op in ("stats", "sync"):
            self._request(op, self._reply)
        elif op in ("pause", "resume"):
            answer = self._monitor_command("stop" if op == "pause" else "cont")
            if answer.get("ok"):
                self.paused = op == "pause"
            self._reply(answer)
        elif op == "delete":
            self._kill_qemu()
            self._reply({"ok": True})
        else:
            self._reply({"ok": False, "error": f"unknown control op {op!r}"})

    def _monitor_command(self, name: str) -> dict[str, Any]:
        if self.qmp is None:
            return {"ok": False, "error": "container is not running", "kind": "NotRunning"}
        try:
            self.qmp.execute(name)
        except (IsoboxError, OSError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True}

    def _reply(self, message: dict[str, Any]) -> None:
        try:
            self.ctl.send(json.dumps(message).encode())
        except OSError as exc:
            log(f"cannot answer the monitor: {exc}")

    # -- exec sessions on vm.sock ---------------------------------------------

    def _on_accept(self, fd: int, events: int) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        session = ExecSession(conn)
        self.sessions[conn.fileno()] = session
        self.loop.add(conn.fileno(), IN, self._on_client)

    def _on_client(self, fd: int, events: int) -> None:
        session = self.sessions[fd]
        if events & OUT:
            self._flush_session(session)
            if fd not in self.sessions:
                return
        if not events & (IN | ERR):
            return
        try:
            data = session.conn.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_session(session)
            return
        try:
            for kind, stream, payload in session.decoder.feed(data):
                self._from_client(session, kind, stream, payload)
        except frames.ProtocolError as exc:
            log(f"exec client: {exc}")
            self._drop_session(session)
            return
        self._want_flush()
        self._throttle()

    def _from_client(self, session: ExecSession, kind: int, stream: int, payload: bytes) -> None:
        if kind == frames.REQUEST:
            message = frames.decode_json(payload)
            client_id = message.pop("id", 0)
            op = str(message.pop("op", ""))

            def answer(reply: dict[str, object]) -> None:
                session.send(frames.encode_json(frames.RESPONSE, {**reply, "id": client_id}))
                self._flush_session(session)

            if op not in ("exec", "extract", "resize", "signal", "stats", "stat_path", "sync",
                          "top", "update"):
                answer({"ok": False, "error": f"op {op!r} is not allowed here"})
                return
            if "stream" in message:
                client_stream = message["stream"]
                agent_stream: int | None
                if not isinstance(client_stream, int):
                    answer({"ok": False, "error": "stream must be a number"})
                    return
                if op in ("exec", "extract"):  # a new process: a new stream
                    agent_stream = self._new_stream(session, client_stream)
                else:
                    agent_stream = session.agent_stream(client_stream)
                    if agent_stream is None:
                        answer({"ok": False, "error": "no such process"})
                        return
                message["stream"] = agent_stream
            self._request(op, answer, **message)
        elif kind in (frames.STDIN, frames.STDIN_EOF):
            agent_stream = session.agent_stream(stream)
            if agent_stream is not None and self.channel is not None:
                try:
                    self.channel.send(frames.encode(kind, agent_stream, payload))
                except ChannelClosed:
                    pass

    def _new_stream(self, session: ExecSession, client_stream: int) -> int:
        self._next_stream += 1
        self.streams[self._next_stream] = (session, client_stream)
        session.streams.add(self._next_stream)
        session.by_client[client_stream] = self._next_stream
        return self._next_stream

    def _flush_session(self, session: ExecSession) -> None:
        fd = session.conn.fileno()
        try:
            session.flush()
        except OSError:
            self._drop_session(session)
            return
        if session.finished and not session.out:
            self._drop_session(session)
            return
        if len(session.out) > CLIENT_BUFFER_MAX:
            log("exec client too slow: dropped")
            self._drop_session(session)
            return
        self.loop.modify(fd, IN | session.out_mask())

    def _drop_session(self, session: ExecSession) -> None:
        fd = session.conn.fileno()
        self.sessions.pop(fd, None)
        self.loop.remove(fd)
        for stream in session.streams:
            self.streams.pop(stream, None)  # the process runs on, its output unread
        session.conn.close()

    # -- the end -------------------------------------------------------------

    def close(self) -> None:
        self._kill_qemu()
        self._reap_qemu(block=True)
        self._close_output()
        for session in list(self.sessions.values()):
            self._drop_session(session)
        if self.listener is not None:
            try:
                os.unlink(os.path.join(self.dir, EXEC_SOCKET))
            except FileNotFoundError:
                pass
            self.listener.close()
        self.loop.close()


class ExecSession:
    """One client of vm.sock: its frames, its streams (agent stream ids)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.decoder = frames.Decoder()
        self.out = bytearray()
        self.streams: set[int] = set()
        self.finished = False
        self.by_client: dict[int, int] = {}

    def agent_stream(self, client_stream: int) -> int | None:
        return self.by_client.get(client_stream)

    def send(self, data: bytes) -> None:
        self.out += data

    def flush(self) -> None:
        while self.out:
            try:
                sent = self.conn.send(self.out)
            except BlockingIOError:
                return
            del self.out[:sent]

    def out_mask(self) -> int:
        return OUT if self.out else 0


def _ignore(_reply: dict[str, object]) -> None:
    pass


def main(directory: str, container_id: str, settings: VmSettings, config: dict[str, Any],
         tty: bool, open_stdin: bool, stdio: tuple[int, int, int],
         ctl: socket.socket) -> NoReturn:
    """The keeper's life, in the fork of the shim: report the guest pid (or
    the error) on ``ctl``, serve, exit with the container's exit code."""
    code = VM_LOST_EXIT
    keeper = None
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        keep = {0, 1, 2, ctl.fileno(), *stdio}
        close_fds_except(keep)
        keeper = Keeper(directory, container_id, settings, config, tty, open_stdin, stdio, ctl)
        try:
            keeper.boot()
            pid = keeper.setup()
        except BaseException as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            exit_code = exc.exit_code if isinstance(exc, IsoboxError) else 125
            log(f"create failed: {message}")
            keeper.close()
            ctl.send(json.dumps({"ok": False, "error": message, "exit_code": exit_code}).encode())
            os._exit(exit_code)
        ctl.send(json.dumps({"ok": True, "pid": pid}).encode())
        code = keeper.serve()
    except BaseException as exc:
        log(f"keeper failed: {exc!r}")
    finally:
        if keeper is not None:
            try:
                keeper.close()
            except BaseException as exc:
                log(f"cleanup failed: {exc!r}")
    os._exit(code)
