"""``exec``: start another process inside a running container.

The forked process makes itself non-dumpable before it joins any namespace,
so no process in the container can open /proc/<pid>/exe (the host's
interpreter) or its fds while it is being set up (runc CVE-2019-5736).
"""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import contextlib
import os

from isobox.errors import Conflict, InvalidArgument, IsoboxError
from isobox.linux import capabilities, console, guard, identity, libc, namespaces, proc
from isobox.linux.files import atomic_write
from isobox.oci.runtime_spec import Process
from isobox.runtime import foreground
from isobox.runtime import process as procmod
from isobox.runtime.cgroup import fork_in, manager_for
from isobox.runtime.state import SECCOMP_CACHE, Container, Status
from isobox.runtime.sync import Channel, ChildFailed, describe
from isobox.runtime.validate import namespace_map, validate_process

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import NoReturn

    from isobox.cgroups import Manager

SETUP_TIMEOUT = 60.0


def exec_in(root: str, container_id: str, process: Process, *, detach: bool = False,
            pid_file: str | None = None, console_socket: str | None = None,
            preserve_fds: int = 0, ignore_paused: bool = False) -> int:
    container = Container.load(root, container_id)
    status = container.status()
    if status is Status.STOPPED:
        raise Conflict("cannot exec in a stopped container")
    if status is Status.PAUSED and not ignore_paused:
        raise Conflict("cannot exec in a paused container (use --ignore-paused)")
    last_cap = proc.cap_last_cap()
    validate_process(process, last_cap)
    if process.terminal and console_socket is None and detach:
        raise InvalidArgument("cannot allocate a tty for a detached process without --console-socket")
    permitted, bset = capabilities.permitted_and_bounding(last_cap)
    linux = container.record.config.linux
    plan = procmod.plan_for(process, linux.seccomp if linux else None, last_cap,
                            permitted & bset, preserve_fds,
                            seccomp_cache=os.path.join(root, SECCOMP_CACHE))
    init_pid = container.record.pid
    to_join = [kind for kind in namespace_map(container.record.config)
               if namespaces.ns_inode(init_pid, kind) != namespaces.ns_inode("self", kind)]

    with contextlib.ExitStack() as stack:
        sock, proxy_end = _console(stack, process.terminal, console_socket)
        parent, child = Channel.pair()
        stack.callback(parent.close)
        manager = manager_for(container.record)
        identity.set_child_subreaper()
        stage1_pid, in_cgroup2 = fork_in(manager)
        if stage1_pid == 0:
            parent.close()
            _stage1(init_pid, to_join, container.record.no_pivot, plan, child, sock,
                    manager, in_cgroup2)
        child.close()
        try:
            parent.expect("joined", SETUP_TIMEOUT)
            pid = int(parent.expect("pid", SETUP_TIMEOUT)["pid"])
        finally:
            os.waitpid(stage1_pid, 0)
        msg = parent.recv(SETUP_TIMEOUT)
        if msg["t"] == "error":
            _, wait_status = os.waitpid(pid, 0)
            failure = ChildFailed(str(msg.get("msg")))
            # 127: not found, 126: cannot run (as a shell reports them)
            failure.exit_code = os.waitstatus_to_exitcode(wait_status)
            raise failure
        if pid_file:
            atomic_write(os.path.abspath(pid_file), str(pid).encode())
        if detach:
            return 0
        master = None
        if proxy_end is not None:
            master, _ = console.recv_fd(proxy_end)
        return foreground.wait(pid, master)
    raise AssertionError("unreachable")


def _console(stack: contextlib.ExitStack, terminal: bool, path: str | None
             ) -> tuple[socket.socket | None, socket.socket | None]:
    """The socket the pty master goes to, and our end of it when we proxy."""
    if not terminal:
        return None, None
    if path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stack.callback(sock.close)
        sock.connect(path)
        return sock, None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stack.callback(ours.close)
    stack.callback(theirs.close)
    return theirs, ours


def _stage1(init_pid: int, to_join: list[str], no_pivot: bool, plan: procmod.Plan,
            chan: Channel, sock: socket.socket | None, manager: Manager,
            in_cgroup2: bool) -> NoReturn:
    try:
        identity.set_dumpable(False)
        # The container's cgroup, joined by ourselves: the kernel's fast path
        # (see cgroups' enter()); the runtime waits for "joined".
        manager.enter(cgroup2=not in_cgroup2)
        chan.send("joined")
        keep = {chan.fileno()} | ({sock.fileno()} if sock is not None else set())
        guard.close_fds_except(keep, plan.preserve_fds)
        fds = {kind: namespaces.open_ns(f"/proc/{init_pid}/ns/{namespaces.proc_name(kind)}")
               for kind in to_join}
        root_fd = os.open(f"/proc/{init_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for kind in namespaces.JOIN_ORDER:
            if kind in fds:
                namespaces.join(fds[kind], kind)
                os.close(fds[kind])
        if no_pivot or "mount" not in to_join:
            os.fchdir(root_fd)
            libc.chroot(".")
        os.close(root_fd)
        guard.block_imports()  # the container's files are what imports would read now
        pid = os.fork()
        if pid == 0:
            _stage2(plan, chan, sock)
        chan.send("pid", pid=pid)
        os._exit(0)
    except BaseException as exc:
        chan.fail(exc)
        os._exit(1)


def _stage2(plan: procmod.Plan, chan: Channel, sock: socket.socket | None) -> NoReturn:
    try:
        os.setsid()
        if plan.terminal and sock is not None:
            procmod.setup_terminal(plan, sock)
            sock.close()
        procmod.apply_limits(plan)
        path = procmod.lookup_executable(plan.args[0], plan.env)
        env = procmod.final_env(plan)
        procmod.apply_identity(plan)
        procmod.enter_cwd(plan.cwd)
        procmod.exec_now(plan, path, env)
    except BaseException as exc:
        chan.send("error", msg=describe(exc))
        os._exit(exc.exit_code if isinstance(exc, IsoboxError) else 126)
