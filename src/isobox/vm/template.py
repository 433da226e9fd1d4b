"""VM templates: boot a utility VM once, up to its agent's ``ready``, save
it, and start VM-isolated containers by restoring that state instead of
booting a kernel (as Kata's VM templating and Firecracker's snapshots do).

A template is made per *shape* (QEMU, kernel, initramfs, accelerator,
memory, CPUs, a NIC or not, the 9p share or not) when the first container
of that shape starts, under a lock, and kept in the templates directory::

    <templates>/<shape>-<key>/ram    guest RAM: the VM ran on it (shared mapping)
                              state  QEMU's device state (a migration stream
                                     without the RAM: x-ignore-shared)
                              console.log, console.log.qemu (QEMU's messages)

A restore maps ``ram`` privately (copy on write: the file never changes,
and the page cache holds one copy for every VM restored from it), loads
``state``, hotplugs the container's disks on the SCSI bus (the template
has none), gives the NIC its tap, and sends the agent ``wake`` (the clock
and fresh entropy; the VM generation ID has already made the kernel reseed).

What the restored VMs share: the template's kernel memory layout (KASLR
offset) and the agent's state at ``ready``. The container's own processes
start after the restore, from its own image, with their own randomness.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass

from isobox.errors import IsoboxError, Unavailable
from isobox.vm import launch, qemu
from isobox.vm.channel import Channel, ChannelClosed
from isobox.vm.initscript import WRITABLE_DISK_FLAG
from isobox.vm.qmp import Qmp

TYPE_CHECKING = False  # typing costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from isobox.vm.settings import VmSettings

FORMAT = 1  #: bump when what a template holds changes
AGENT_FD, QMP_FD, INCOMING_FD = 3, 4, 5
TEMPLATE_MAC = "02:1b:0b:00:00:01"  #: the template NIC's; a restore gives the container's
SAVE_TIMEOUT = 60.0
STALE_AFTER = 3600.0  #: seconds before a half-made template (a crashed maker) is removed
_CAPABILITIES = [{"capability": "x-ignore-shared", "state": True}]


@dataclass(frozen=True)
class Shape:
    """What must be the same for a VM to restore from a template."""
    directory: str  #: where templates live (not part of the key)
    qemu: str | None
    kernel: str
    initrd: str
    accel: str
    memory_mb: int
    cpus: int
    nic: bool
    share_tag: str | None  #: the one 9p share's tag (its path is the restore's)
    share_readonly: bool

    def name(self) -> str:
        return (f"{self.accel}-m{self.memory_mb}-c{self.cpus}-n{int(self.nic)}"
                f"-s{int(self.share_tag is not None)}")

    def key(self) -> str:
        """Changes with anything the saved state depends on, the files' contents included."""
        fields = asdict(self)
        del fields["directory"]
        files = {path: _identity(path) for path in
                 (self.kernel, self.initrd, qemu.find_binary(self.qemu))}
        raw = json.dumps({"format": FORMAT, "shape": fields, "files": files,
                          "cmdline": qemu.KERNEL_CMDLINE}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Template:
    name: str
    path: str

    @property
    def ram(self) -> str:
        return os.path.join(self.path, "ram")

    @property
    def state(self) -> str:
        return os.path.join(self.path, "state")


def shape_of(settings: VmSettings) -> Shape | None:
    """The template shape of a VM, or None when it cannot be restored from
    one (templates off, more than one NIC or share)."""
    if not settings.templates or len(settings.nics) > 1 or len(settings.shares) > 1:
        return None
    share = settings.shares[0] if settings.shares else None
    return Shape(directory=settings.templates, qemu=settings.qemu, kernel=settings.kernel,
                 initrd=settings.initrd, accel=settings.accel, memory_mb=settings.memory_mb,
                 cpus=settings.cpus, nic=bool(settings.nics),
                 share_tag=share.tag if share else None,
                 share_readonly=share.readonly if share else False)


def _spec(shape: Shape, memory_path: str, *, making: bool, console_log: str | None,
          share_path: str, nic: qemu.Nic | None) -> qemu.VmSpec:
    """The one device set of a template and of its restores (they must match)."""
    shares = [] if shape.share_tag is None else [
        qemu.Share(shape.share_tag, share_path, shape.share_readonly)]
    nics = [] if not shape.nic else [nic or qemu.Nic("", TEMPLATE_MAC)]
    return qemu.VmSpec(
        kernel=shape.kernel, initrd=shape.initrd, memory_mb=shape.memory_mb, cpus=shape.cpus,
        accel=shape.accel, agent_fd=AGENT_FD, qmp_fd=QMP_FD, console_log=console_log,
        shares=shares, nics=nics, cmdline_extra=WRITABLE_DISK_FLAG,  # ext4 loaded, in case
        memory_path=memory_path, memory_shared=making, hotplug=True, incoming=not making)


def restore_spec(shape: Shape, saved: Template, settings: VmSettings) -> qemu.VmSpec:
    """QEMU for ``settings``' container, waiting for ``saved``'s state."""
    nic = qemu.Nic(settings.nics[0].tap, settings.nics[0].mac) if settings.nics else None
    share_path = settings.shares[0].path if settings.shares else ""
    return _spec(shape, saved.ram, making=False, console_log=settings.console_log,
                 share_path=share_path, nic=nic)


def receive(monitor: Qmp, timeout: float) -> None:
    """Load the saved state QEMU was given as INCOMING_FD; the VM runs on."""
    monitor.execute("migrate-set-capabilities", {"capabilities": _CAPABILITIES})
    monitor.execute("migrate-incoming", {"uri": f"fd:{INCOMING_FD}"})
    monitor.wait_migration(timeout)


def wake_request() -> dict[str, object]:
    return {"time_ns": time.time_ns(), "entropy": os.urandom(64).hex()}


def ensure(shape: Shape, boot_timeout: float) -> Template:
    """The shape's template, made now if there is none (other makers wait
    on the lock and then use it)."""
    os.makedirs(shape.directory, mode=0o700, exist_ok=True)
    name = f"{shape.name()}-{shape.key()}"
    found = Template(name, os.path.join(shape.directory, name))
    if os.path.isfile(found.state):
        return found
    lock = os.open(os.path.join(shape.directory, f".{shape.name()}.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(found.state):
            return found
        _remove_older(shape)
        _make(shape, found, boot_timeout)
        return found
    finally:
        os.close(lock)


def discard(saved: Template) -> None:
    shutil.rmtree(saved.path, ignore_errors=True)


def _remove_older(shape: Shape) -> None:
    """Templates of this shape made for other files (a new kernel or agent),
    and half-made ones left by a maker that died."""
    prefix = f"{shape.name()}-"
    for entry in os.listdir(shape.directory):
        path = os.path.join(shape.directory, entry)
        if entry.startswith(prefix):
            shutil.rmtree(path, ignore_errors=True)
        elif entry.startswith(".make-"):
            with contextlib.suppress(OSError):
                if time.time() - os.stat(path).st_mtime > STALE_AFTER:
                    shutil.rmtree(path, ignore_errors=True)


def _make(shape: Shape, target: Template, boot_timeout: float) -> None:
    work = os.path.join(shape.directory, f".make-{os.getpid()}-{target.name}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "share"), mode=0o700)
    try:
        ram = os.path.join(work, "ram")
        state = os.path.join(work, "state")
        _boot_and_save(shape, ram, state, os.path.join(work, "console.log"),
                       os.path.join(work, "share"), boot_timeout)
        os.rmdir(os.path.join(work, "share"))
        for path in (ram, state):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(work, target.path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _boot_and_save(shape: Shape, ram: str, state: str, console_log: str, share: str,
                   boot_timeout: float) -> None:
    agent_ours, agent_theirs = socket.socketpair()
    qmp_ours, qmp_theirs = socket.socketpair()
    out = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    # QEMU's own messages (the backend-less NIC's warning...) go next to the console's.
    messages = os.open(console_log + ".qemu", os.O_WRONLY | os.O_CREAT | os.O_APPEND
                       | os.O_CLOEXEC, 0o600)
    pid = 0
    try:
        argv = qemu.command(_spec(shape, ram, making=True, console_log=console_log,
                                  share_path=share, nic=None), shape.qemu)
        pid = launch.spawn(argv, {AGENT_FD: agent_theirs.fileno(), QMP_FD: qmp_theirs.fileno()},
                           stderr=messages)
        agent_theirs.close()
        qmp_theirs.close()
        channel = Channel(agent_ours.fileno())
        exited = lambda: launch.reap(pid, block=False) is not None  # noqa: E731
        if not launch.wait_ready(channel, exited, boot_timeout, "the VM template"):
            raise Unavailable(f"the VM template's agent did not answer within "
                              f"{boot_timeout:.0f}s (see {console_log})")
        _await_reply(channel, "hello", boot_timeout)  # after the agent's warm-up imports
        monitor = Qmp(qmp_ours.fileno())
        monitor.execute("migrate-set-capabilities", {"capabilities": _CAPABILITIES})
        monitor.execute("getfd", {"fdname": "state"}, fd=out)  # outgoing fd: wants a name
        monitor.execute("migrate", {"uri": "fd:state"})
        monitor.wait_migration(SAVE_TIMEOUT)
    except ChannelClosed as exc:
        raise Unavailable(f"the VM template stopped while it was made: {exc}") from None
    finally:
        os.close(out)
        os.close(messages)
        if pid:
            launch.kill(pid)
            launch.reap(pid, block=True)
        for end in (agent_ours, agent_theirs, qmp_ours, qmp_theirs):
            end.close()


def _await_reply(channel: Channel, op: str, timeout: float) -> None:
    import select

    box: list[dict[str, object]] = []
    channel.request(op, box.append)
    deadline = time.monotonic() + timeout
    while not box:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unavailable(f"the VM template's agent did not answer {op}")
        channel.flush()
        ready, _, _ = select.select([channel.fd], [], [], min(left, 0.2))
        if ready:
            channel.receive()
    if not box[0].get("ok"):
        raise IsoboxError(f"the VM template's agent refused {op}: {box[0].get('error')}")


def _identity(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]
