"""The processes forked by ``create``: stage 1 enters or makes namespaces,
stage 2 becomes the container's init, builds its rootfs, waits for
``start`` on the exec fifo and execs the user's program."""

from __future__ import annotations

import _socket as socket  # not socket.py: it imports selectors, enums (~4 ms)
import errno
import os
from types import SimpleNamespace

from isobox.errors import IsoboxError
from isobox.linux import guard, identity, libc, namespaces, netdev
from isobox.linux.lazylog import get_logger
from isobox.oci.runtime_spec import Spec, State
from isobox.runtime import process as procmod
from isobox.runtime.hooks import run_hooks
from isobox.runtime.rootfs import CgroupSource, RootfsBuilder, apply_sysctl
from isobox.runtime.sync import Channel, describe

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import NoReturn

    from isobox.cgroups import Manager

log = get_logger(__name__)


class InitConfig(SimpleNamespace):
    container_id: str
    spec: Spec
    bundle: str
    rootfs: str
    namespaces: dict[str, str | None]
    plan: procmod.Plan
    cgroup: Manager
    cgroup_sources: list[CgroupSource]
    no_pivot: bool
    fifo_path: str
    console: socket.socket | None

    @property
    def new_userns(self) -> bool:
        return "user" in self.namespaces and self.namespaces["user"] is None

    @property
    def in_userns(self) -> bool:
        return "user" in self.namespaces


def enter_namespaces(ns: dict[str, str | None], chan: Channel) -> None:
    """Join the namespaces given by path, then unshare the new ones (user first)."""
    fds = {kind: namespaces.open_ns(path) for kind, path in ns.items() if path}
    try:
        if "user" in fds:
            namespaces.join(fds.pop("user"), "user")
        elif "user" in ns:
            namespaces.unshare(namespaces.CLONE_NEWUSER)
            chan.send("userns")
            chan.expect("mapped")
        if "user" in ns:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        for kind in namespaces.JOIN_ORDER:
            if kind in fds:
                namespaces.join(fds[kind], kind)
    finally:
        for fd in fds.values():
            os.close(fd)
    flags = 0
    for kind, path in ns.items():
        if path is None and kind != "user":
            flags |= namespaces.flag(kind)
    if flags:
        namespaces.unshare(flags)


def stage1(cfg: InitConfig, chan: Channel, *, in_cgroup2: bool) -> NoReturn:
    try:
        # Until it execs the user's program, the init is the host's
        # interpreter: keep every container process out of /proc/<pid>
        # (exe, fds, cwd, root). execve makes the program dumpable again.
        identity.set_dumpable(False)
        # Into the cgroup before anything else, by ourselves (single-threaded:
        # the kernel's fast path), then tell the runtime, which waits for it.
        cfg.cgroup.enter(cgroup2=not in_cgroup2)
        process = cfg.spec.process
        if process is not None and process.oom_score_adj is not None:
            identity.write_oom_score_adj(process.oom_score_adj)
        chan.send("joined")
        # The fifo ``start`` writes to, opened while still the host's root (a
        # user namespace's root could not read it). Read-write, so opening
        # never blocks and reading blocks until ``start``; a fifo fd, not a
        # directory fd, so nothing can climb from it.
        start_fd = os.open(cfg.fifo_path, os.O_RDWR | os.O_CLOEXEC)
        enter_namespaces(cfg.namespaces, chan)
        # Stage 2 must not speak before the runtime has its pid: it waits for
        # this pipe to close, which happens once "pid" is sent.
        hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(hold_w)
            os.read(hold_r, 1)
            os.close(hold_r)
            stage2(cfg, chan, start_fd)
        os.close(hold_r)
        chan.send("pid", pid=pid)
        os.close(hold_w)
        os._exit(0)
    except BaseException as exc:
        chan.fail(exc)
        os._exit(1)


def _hook_state(cfg: InitConfig, status: str, pid: int) -> State:
    return State(oci_version=cfg.spec.oci_version, id=cfg.container_id, status=status,
                 pid=pid, bundle=cfg.bundle, annotations=cfg.spec.annotations)


def stage2(cfg: InitConfig, chan: Channel, start_fd: int) -> NoReturn:
    plan = cfg.plan
    ready = switched = False
    try:
        keep = {chan.fileno(), start_fd, *log.handler_fds()}
        if cfg.console is not None:
            keep.add(cfg.console.fileno())
        guard.close_fds_except(keep, plan.preserve_fds)
        os.setsid()
        if cfg.namespaces.get("network", "") is None:
            netdev.set_up("lo")
        builder = RootfsBuilder(cfg.spec, cfg.rootfs, cfg.bundle,
                                cgroup_sources=cfg.cgroup_sources,
                                cgroupns=cfg.namespaces.get("cgroup", "") is None,
                                userns=cfg.in_userns)
        builder.prepare()
        chan.send("prestart")
        host_pid = int(chan.expect("prestart-done")["pid"])
        hooks = cfg.spec.hooks
        if hooks is not None and hooks.start_container:
            import subprocess  # noqa: F401  (now, from the host: never after pivot_root)
        if hooks is not None and hooks.create_container:
            run_hooks("createContainer", hooks.create_container,
                      _hook_state(cfg, "creating", host_pid))
        builder.pivot(cfg.no_pivot)
        switched = True
        guard.block_imports()
        linux = cfg.spec.linux
        if linux is not None and linux.sysctl:
            apply_sysctl(linux.sysctl)  # before finish() makes /proc/sys read-only
        builder.finish()
        if cfg.spec.hostname:
            libc.sethostname(cfg.spec.hostname)
        if cfg.spec.domainname:
            libc.setdomainname(cfg.spec.domainname)
        if plan.terminal and cfg.console is not None:
            procmod.setup_terminal(plan, cfg.console)
        if cfg.console is not None:
            cfg.console.close()
        procmod.apply_limits(plan)
        path = procmod.lookup_executable(plan.args[0], plan.env)
        env = procmod.final_env(plan)
        procmod.apply_identity(plan)
        procmod.enter_cwd(plan.cwd)
        chan.send("ready")
        ready = True
        while not os.read(start_fd, 1):
            pass
        os.close(start_fd)
        if hooks is not None and hooks.start_container:
            run_hooks("startContainer", hooks.start_container,
                      _hook_state(cfg, "created", host_pid))
        procmod.exec_now(plan, path, env)
    except BaseException as exc:
        message = describe(exc)
        if log.debug_enabled() and not switched:
            # Only before pivot_root: formatting a traceback reads source
            # files, which afterwards would be the image's.
            log.debug("container init failed", exc_info=True)
        chan.fail(exc)
        if ready:
            try:
                os.write(2, f"isobox-runtime: {message}\n".encode())
            except OSError:
                pass
        code = exc.exit_code if isinstance(exc, IsoboxError) else 1
        if ready and isinstance(exc, OSError):
            code = 127 if exc.errno == errno.ENOENT else 126
        os._exit(code)

