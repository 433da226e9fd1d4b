"""The agent: requests answered, processes relayed and reaped, the guest
shut down. One poll loop watches the port, every relayed fd, and SIGCHLD
(through the loop's wakeup fd). The protocol is in
:mod:`isobox.taskapi.protocol`.

Whatever a request does wrong is answered with an error; the agent carries
on. It is PID 1 of the guest (or a child subreaper on a host, in tests), so
every orphan comes to it to be reaped.
"""

from __future__ import annotations

import os
import signal
import time

from isobox.agent import containers, network, stats
from isobox.agent import requests as rq
from isobox.agent.codes import describe, failure_code
from isobox.agent.connection import Connection
from isobox.agent.containers import BuiltinRuntime
from isobox.agent.log import log, log_exception
from isobox.agent.relay import Relay
from isobox.agent.stdio import Stdio
from isobox.agent.storage import Storage
from isobox.errors import Conflict, InvalidArgument, IsoboxError, NotRunning
from isobox.linux.loop import Loop
from isobox.linux.proc import total_memory
from isobox.taskapi import frames
from isobox.taskapi import protocol as p

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable

    from isobox.agent.paths import Paths
    from isobox.agent.streams import Stream

    Message = dict[str, object]

SHUTDOWN_WAIT = 5.0  # seconds killed processes get to be reaped
LAST_WORDS = 5.0  # seconds to write the shutdown response before power-off
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
BUSYBOX = "/bin/busybox"  #: the guest's ps (top)


class Agent:
    def __init__(self, fd: int, paths: Paths, *, reconnects: bool, pid1: bool) -> None:
        self.loop = Loop()
        self.paths = paths
        self.pid1 = pid1
        self.kernel = os.uname().release
        greeting = frames.encode_json(frames.EVENT, {"event": p.READY, "kernel": self.kernel})
        self.conn = Connection(self.loop, fd, greeting=greeting, on_frame=self._on_frame,
                               on_closed=self._on_host_gone, on_drained=self._on_drained,
                               reconnects=reconnects)
        self.relay = Relay(self.loop, self.conn)
        self.runtime = BuiltinRuntime(paths)
        self.storage = Storage(paths)
        self.container: str | None = None  # the id of the one container, until its init exits
        self._after_response: Callable[[], None] | None = None
        self.ops: dict[str, Callable[[Message], Message]] = {
            p.HELLO: self.hello, p.STORAGE: self.setup_storage, p.NETWORK: self.setup_network,
            p.CREATE: self.create, p.START: self.start, p.EXEC: self.exec,
            p.SIGNAL: self.signal, p.RESIZE: self.resize, p.SYNC: self.sync,
            p.STATS: self.stats, p.SHUTDOWN: self.shutdown, p.WAKE: self.wake,
            p.STAT_PATH: self.stat_path, p.EXTRACT: self.extract, p.TOP: self.top,
            p.UPDATE: self.update,
        }

    def run(self) -> None:
        os.makedirs(self.paths.run, 0o700, exist_ok=True)
        self.loop.handle_signals((signal.SIGCHLD, *STOP_SIGNALS), self._on_signal)
        self.conn.start()
        self.loop.call_later(0, self._warm_up)  # the host has been greeted
        try:
            self.loop.run()
        finally:
            self.loop.close()

    def _warm_up(self) -> None:
        """Import the runtime while the host prepares its first requests."""
        try:
            containers.load()
        except Exception:
            log_exception("importing the runtime failed")

    # -- frames ---------------------------------------------------------

    def _on_frame(self, kind: int, stream: int, payload: bytes) -> None:
        if kind == frames.REQUEST:
            self._on_request(payload)
        elif kind == frames.STDIN:
            self.relay.write_stdin(stream, payload)
        elif kind == frames.STDIN_EOF:
            self.relay.close_stdin(stream)
        else:
            log(f"ignoring a {frames.KIND_NAMES[kind]} frame from the host")

    def _on_request(self, payload: bytes) -> None:
        rid = 0
        try:
            msg = frames.decode_json(payload)
            rid = rq.request_id(msg)
            op = rq.get_str(msg, "op")
            handler = self.ops.get(op)
            if handler is None:
                raise InvalidArgument(f"unknown op {op!r}")
            result = handler(msg)
        except Exception as exc:
            if not isinstance(exc, (IsoboxError, OSError, frames.ProtocolError)):
                log_exception("a request failed")
            self.conn.send_json(frames.RESPONSE, {"id": rid, "ok": False, "error": describe(exc),
                                                  "exit_code": failure_code(exc)})
        else:
            self.conn.send_json(frames.RESPONSE, {"id": rid, "ok": True, **result})
        then, self._after_response = self._after_response, None
        if then is not None:
            then()

    def _on_drained(self) -> None:
        self.relay.resume()

    # -- ops ------------------------------------------------------------

    def hello(self, msg: Message) -> Message:
        return {"version": p.VERSION, "kernel": self.kernel}

    def setup_storage(self, msg: Message) -> Message:
        return {"rootfs": self.storage.setup(rq.parse_storage(msg))}

    def setup_network(self, msg: Message) -> Message:
        network.configure(rq.parse_network(msg))
        return {}

    def create(self, msg: Message) -> Message:
        req = rq.parse_create(msg)
        if self.container is not None:
            raise Conflict(f"this guest already runs container {self.container}")
        self.relay.streams.check_free(req.stream)
        stdio = Stdio(req.tty, req.open_stdin)
        try:
            started = self.runtime.create(req.id, req.config, stdio.container, req.tty,
                                          req.console)
        except BaseException:
            stdio.close()
            raise
        self.container = req.id
        self.relay.attach(stdio.stream(req.stream, started.pid, started.master, is_init=True))
        return {"pid": started.pid}

    def start(self, msg: Message) -> Message:
        stream = self.relay.streams.get(rq.parse_stream(msg))
        if not stream.is_init:
            raise InvalidArgument(f"stream {stream.id} is not the container's init")
        self.runtime.start(self._container())
        return {}

    def exec(self, msg: Message) -> Message:
        req = rq.parse_exec(msg)
        container = self._container()
        self.relay.streams.check_free(req.stream)
        stdio = Stdio(req.tty, req.open_stdin)
        try:
            started = self.runtime.exec(container, req.process, stdio.container, req.tty,
                                        req.console)
        except BaseException:
            stdio.close()
            raise
        self.relay.attach(stdio.stream(req.stream, started.pid, started.master))
        return {"pid": started.pid}

    def update(self, msg: Message) -> Message:
        import json

        from isobox.oci.runtime_spec import decode_resources
        from isobox.oci.struct import ValidationError
        from isobox.runtime.cgroup import manager_for
        from isobox.runtime.state import Container

        raw = rq.get_dict(msg, "resources")
        try:
            resources = decode_resources(json.dumps(raw).encode())
        except ValidationError as exc:
            raise InvalidArgument(f"invalid resources: {exc}") from None
        manager_for(Container.load(self.runtime.root, self._container()).record).set(resources)
        return {}

    def top(self, msg: Message) -> Message:
        from isobox.agent import command
        from isobox.runtime.query import pids

        args = rq.parse_top(msg)
        found = pids(self.runtime.root, self._container())
        out = command.output([BUSYBOX, "ps", *args])
        return {"output": out.decode(errors="replace"), "pids": found}

    def stat_path(self, msg: Message) -> Message:
        from isobox.agent import files  # only for cp

        path, follow = rq.parse_stat_path(msg)
        self._container()
        return files.stat_path(self.paths, path, follow)

    def extract(self, msg: Message) -> Message:
        from isobox.agent import files

        req = rq.parse_extract(msg)
        self._container()
        self.relay.streams.check_free(req.stream)
        stdio = Stdio(tty=False, open_stdin=True)
        try:
            pid = files.start_extract(self.paths, stdio.container, req.directory, req.owner)
        except BaseException:
            stdio.close()
            raise
        self.relay.attach(stdio.stream(req.stream, pid, None))
        return {"pid": pid}

    def signal(self, msg: Message) -> Message:
        stream_id, sig, all_processes = rq.parse_signal(msg)
        stream = self.relay.streams.get(stream_id)
        if stream.exited:
            raise NotRunning(f"the process of stream {stream_id} has exited")
        if stream.is_init:
            self.runtime.kill(self._container(), sig, all_processes)
        else:
            os.kill(stream.pid, sig)  # not reaped yet: the pid is still this process's
        return {}

    def resize(self, msg: Message) -> Message:
        from isobox.linux import console

        stream_id, height, width = rq.parse_resize(msg)
        stream = self.relay.streams.get(stream_id)
        if not stream.tty:
            raise InvalidArgument(f"the process of stream {stream_id} has no terminal")
        console.set_size(stream.master, height, width)
        return {}

    def sync(self, msg: Message) -> Message:
        self.storage.sync()
        return {}

    def stats(self, msg: Message) -> Message:
        raw = self.runtime.stats(self._container())
        return dict(stats.summarize(raw, total_memory()))

    def wake(self, msg: Message) -> Message:
        req = rq.parse_wake(msg)
        time.clock_settime_ns(time.CLOCK_REALTIME, req.time_ns)
        with open("/dev/urandom", "wb") as pool:  # mixed in (not credited): unique per restore
            pool.write(req.entropy)
        return {}

    def shutdown(self, msg: Message) -> Message:
        self._teardown()
        self._after_response = self._end
        return {}

    def _container(self) -> str:
        if self.container is None:
            raise NotRunning("no container is running in this guest")
        return self.container

    # -- processes ------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            self._reap()
        elif self.pid1:
            log(f"ignoring signal {sig}")
        else:
            log(f"signal {sig}: stopping")
            self._teardown()
            self._end()

    def _reap(self) -> None:
        """Collect every exited child: ours, and the orphans that come to us."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            stream = self.relay.streams.by_pid(pid)
            if stream is None:
                continue
            if stream.is_init:
                self._init_exited(stream, status)
            else:
                self.relay.exited(stream, status)

    def _init_exited(self, stream: Stream, status: int) -> None:
        container, self.container = self.container, None
        if container is not None:
            try:
                self.runtime.delete(container)  # before the exit event: cgroup and state gone
            except Exception as exc:
                log(f"deleting container {container}: {describe(exc)}")
        self.relay.exited(stream, status)

    # -- the end --------------------------------------------------------

    def _teardown(self) -> None:
        """Kill every process, end every stream, unmount everything, sync."""
        # Kill, reap, then delete: the init of a pid namespace finishes dying
        # only once every process of the namespace is reaped, and exec'd ones
        # are the agent's children: deleting first would wait on the agent.
        if self.container is not None:
            try:
                self.runtime.kill(self.container, signal.SIGKILL, all_processes=True)
            except Exception as exc:
                log(f"killing container {self.container}: {describe(exc)}")
        for stream in self.relay.streams.all():
            if not stream.exited and not stream.is_init:
                try:
                    os.kill(stream.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while True:
            self._reap()  # the init's exit deletes the container
            if all(s.exited for s in self.relay.streams.all()) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if self.container is not None:  # its init would not die
            try:
                self.runtime.delete(self.container)
            except Exception as exc:
                log(f"deleting container {self.container}: {describe(exc)}")
        for stream in self.relay.streams.all():
            if stream.exited:
                self.relay.finish_now(stream)
            else:
                log(f"the process of stream {stream.id} (pid {stream.pid}) did not die")
        self.storage.teardown()
        os.sync()

    def _on_host_gone(self) -> None:
        log("the host closed the connection")
        self._teardown()
        self._end()

    def _end(self) -> None:
        self.conn.flush_blocking(LAST_WORDS)
        if self.pid1:
            from isobox.agent.power import power_off

            power_off()
        self.loop.stop()
