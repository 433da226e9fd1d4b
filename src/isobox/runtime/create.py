"""``create``: build the container and leave its init waiting for ``start``."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import contextlib
import os
import pwd
import signal
import time

from isobox import cgroups
from isobox.errors import AlreadyExists, InvalidArgument, NotFound
from isobox.linux import capabilities, identity, proc
from isobox.linux.files import atomic_write
from isobox.oci.runtime_spec import IDMapping, Spec, decode_spec
from isobox.runtime import process as procmod
from isobox.runtime.cgroup import cgroup_path, cgroup_sources, effective_resources, fork_in
from isobox.runtime.hooks import run_hooks
from isobox.runtime.init import InitConfig, stage1
from isobox.runtime.state import (
    EXEC_FIFO,
    SECCOMP_CACHE,
    Container,
    Record,
    Status,
    validate_id,
)
from isobox.runtime.sync import Channel
from isobox.runtime.validate import namespace_map, validate_spec

SETUP_TIMEOUT = 60.0


def load_bundle(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            return decode_spec(f.read())
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None


def _write_id_map(pid: int, name: str, mappings: list[IDMapping]) -> None:
    text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write(text)


def _now() -> str:
    """RFC 3339 in UTC with nanoseconds, as runc writes ``created``."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + \
        f".{ns % 1_000_000_000:09d}Z"


def _owner() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def create(root: str, container_id: str, bundle: str, *, pid_file: str | None = None,
           console_socket: str | socket.socket | None = None, no_pivot: bool = False,
           preserve_fds: int = 0, systemd_cgroup: bool = False) -> Container:
    validate_id(container_id)
    bundle = os.path.abspath(bundle)
    spec = load_bundle(bundle)
    last_cap = proc.cap_last_cap()
    rootfs = validate_spec(spec, bundle, last_cap)
    ns = namespace_map(spec)
    process = spec.process
    assert process is not None
    if process.terminal and console_socket is None:
        raise InvalidArgument("cannot allocate a tty without --console-socket")
    permitted, bset = capabilities.permitted_and_bounding(last_cap)
    available = permitted & bset
    linux = spec.linux
    os.makedirs(root, 0o711, exist_ok=True)
    plan = procmod.plan_for(process, linux.seccomp if linux else None, last_cap, available,
                            preserve_fds, seccomp_cache=os.path.join(root, SECCOMP_CACHE))

    cdir = os.path.join(root, container_id)
    try:
        os.mkdir(cdir, 0o711)
    except FileExistsError:
        raise AlreadyExists(f"container with id exists: {container_id}") from None

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_remove_dir, cdir)
        old_umask = os.umask(0)
        try:
            os.mkfifo(os.path.join(cdir, EXEC_FIFO), 0o622)
        finally:
            os.umask(old_umask)
        cg_path = cgroup_path(container_id, linux.cgroups_path if linux else None,
                              systemd_cgroup)
        manager = cgroups.new_manager(cg_path)
        manager.create()
        cleanup.callback(manager.destroy)
        resources = effective_resources(spec)
        if resources is not None:
            manager.set(resources)
        console: socket.socket | None = None
        if isinstance(console_socket, str):
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            cleanup.callback(console.close)
            try:
                console.connect(console_socket)
            except OSError as exc:
                raise NotFound(f"console socket {console_socket}: {exc.strerror}") from None
        else:
            console = console_socket
        cfg = InitConfig(
            container_id=container_id, spec=spec, bundle=bundle, rootfs=rootfs,
            namespaces=ns, plan=plan, cgroup=manager, cgroup_sources=cgroup_sources(manager),
            no_pivot=no_pivot, fifo_path=os.path.join(cdir, EXEC_FIFO), console=console,
        )
        container = _spawn(cfg, manager, root, cleanup, cg_path)
        if pid_file:
            atomic_write(os.path.abspath(pid_file), str(container.record.pid).encode())
        cleanup.pop_all()
        if isinstance(console_socket, str) and console is not None:
            console.close()
        return container
    raise AssertionError("unreachable")


def _spawn(cfg: InitConfig, manager: cgroups.Manager, root: str,
           cleanup: contextlib.ExitStack, cg_path: str) -> Container:
    parent, child = Channel.pair()
    cleanup.callback(parent.close)
    identity.set_child_subreaper()
    stage1_pid, in_cgroup2 = fork_in(manager)
    if stage1_pid == 0:
        parent.close()
        stage1(cfg, child, in_cgroup2=in_cgroup2)
    child.close()
    cleanup.callback(_reap, stage1_pid)
    # Stage 1 joins the cgroup itself, first thing (see cgroups' enter()).
    parent.expect("joined", SETUP_TIMEOUT)
    msg = parent.recv(SETUP_TIMEOUT)
    if msg["t"] == "userns":
        linux = cfg.spec.linux
        assert linux is not None
        _write_id_map(stage1_pid, "uid_map", linux.uid_mappings or [])
        _write_id_map(stage1_pid, "gid_map", linux.gid_mappings or [])
        parent.send("mapped")
        msg = parent.recv(SETUP_TIMEOUT)
    if msg["t"] != "pid":
        parent.sock.close()
        raise_child_error(msg)
    init_pid = int(msg["pid"])
    cleanup.callback(_kill_and_reap, init_pid)
    os.waitpid(stage1_pid, 0)
    record = Record(
        id=cfg.container_id, bundle=cfg.bundle, rootfs=cfg.rootfs, pid=init_pid,
        pid_start=proc.start_time(init_pid), created=_now(), owner=_owner(),
        cgroup_path=cg_path, config=cfg.spec, no_pivot=cfg.no_pivot,
    )
    container = Container(root, record)
    encoded = container.encode()  # while stage 2 builds the rootfs
    parent.expect("prestart", SETUP_TIMEOUT)
    hooks = cfg.spec.hooks
    if hooks is not None:
        state = container.oci_state(Status.CREATING)
        run_hooks("prestart", hooks.prestart, state)
        run_hooks("createRuntime", hooks.create_runtime, state)
    parent.send("prestart-done", pid=init_pid)
    parent.expect("ready", SETUP_TIMEOUT)
    container.save(encoded)
    return container


def raise_child_error(msg: dict[str, object]) -> None:
    from isobox.runtime.sync import ChildFailed

    if msg["t"] == "error":
        raise ChildFailed(str(msg.get("msg")))
    raise ChildFailed(f"container setup stopped unexpectedly ({msg['t']})")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def _remove_dir(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
