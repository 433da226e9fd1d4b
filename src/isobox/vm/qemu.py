"""The QEMU command line of a utility VM.

The host talks to the guest over two sockets the caller made and passes
to QEMU by number (``-chardev socket,fd=N``: QEMU 7.2 takes a connected
stream socket as an already-open connection): the agent's virtio-serial
port and, optionally, QMP. Nothing is ever read from the terminal.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from isobox.errors import InvalidArgument, Unavailable
from isobox.vm.initscript import AGENT_PORT

QEMU = "qemu-system-x86_64"
#: ``-M pc`` booted every time under TCG; ``microvm`` hung in early timer
#: calibration on a loaded host (see ``benchmarks/vm_boot_loop.py``).
DEFAULT_MACHINE = "pc"
#: panic=-1: a panic reboots at once, and -no-reboot turns that into QEMU's exit.
#: The i8042 options skip probing a keyboard controller the VM does without;
#: tsc=reliable and no_timer_check skip clock checks that stall under TCG.
#: Measured under TCG (benchmarks/vm_boot_loop.py): cryptomgr.notests skips
#: the crypto self-tests (~0.3 s); acpi=noirq skips evaluating ACPI interrupt
#: links when virtio-pci enables its device (~0.2 s; virtio uses MSI-X).
KERNEL_CMDLINE = ("console=ttyS0 quiet panic=-1 i8042.noaux i8042.nomux i8042.nopnp "
                  "i8042.dumbkbd tsc=reliable no_timer_check cryptomgr.notests acpi=noirq")
_SERIAL_MAX = 20  # virtio-blk's id field
_CACHE_WRITABLE = "writeback"  # honours the guest's flushes, unlike "unsafe"
SCSI_BUS = "scsi0"


@dataclass(frozen=True)
class Disk:
    path: str
    serial: str  #: the guest finds the disk by /sys/block/vd*/serial
    readonly: bool
    format: str = "raw"


@dataclass(frozen=True)
class Share:
    tag: str  #: the 9p mount tag
    path: str
    readonly: bool


@dataclass(frozen=True)
class Nic:
    tap: str  #: "" for a NIC with no backend (a template's, before a restore gives it one)
    mac: str


@dataclass
class VmSpec:
    kernel: str
    initrd: str
    memory_mb: int
    cpus: int
    accel: str  #: "kvm" or "tcg"
    agent_fd: int  #: a connected unix stream socket, inherited by QEMU
    qmp_fd: int | None = None  #: likewise, for QMP
    console_log: str | None = None  #: the kernel console (ttyS0) goes here, else nowhere
    disks: list[Disk] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    cmdline_extra: str = ""
    machine: str = DEFAULT_MACHINE
    #: Guest RAM in this file (a template's), mapped shared to make it or
    #: private to restore from it; else anonymous memory.
    memory_path: str | None = None
    memory_shared: bool = False
    #: The devices of a VM that can be templated: a SCSI bus for disks
    #: hotplugged after a restore, and a VM generation ID (its change on
    #: every restore makes the guest kernel reseed its RNG).
    hotplug: bool = False
    #: Wait for a saved state over QMP (``migrate-incoming``) instead of booting.
    incoming: bool = False


def find_binary(name: str | None = None) -> str:
    """The absolute path of the QEMU binary (the caller may exec it directly)."""
    found = shutil.which(name or QEMU)
    if found is None:
        raise Unavailable(f"{name or QEMU} not found: install qemu-system-x86")
    return found


def command(spec: VmSpec, binary: str | None = None) -> list[str]:
    _validate(spec)
    # TCG: a small translation cache (the default reserves 1 GiB, and fills it).
    accel = "tcg,tb-size=64" if spec.accel == "tcg" else spec.accel
    machine = _machine(spec.machine)
    if spec.memory_path is not None:
        machine += ",memory-backend=ram0"
    argv = [find_binary(binary), "-M", machine, "-accel", accel,
            "-cpu", "host" if spec.accel == "kvm" else "max",
            "-m", str(spec.memory_mb), "-smp", str(spec.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", spec.kernel, "-initrd", spec.initrd,
            "-append", f"{KERNEL_CMDLINE} {spec.cmdline_extra}".strip()]
    if spec.memory_path is not None:
        argv += ["-object", f"memory-backend-file,id=ram0,size={spec.memory_mb}M,"
                            f"mem-path={_escape(spec.memory_path)},"
                            f"share={'on' if spec.memory_shared else 'off'}"]
    if spec.console_log:
        argv += ["-chardev", f"file,id=console,path={_escape(spec.console_log)}",
                 "-serial", "chardev:console"]
    else:
        argv += ["-serial", "null"]
    argv += ["-chardev", f"socket,id=agent,fd={spec.agent_fd}",
             "-device", "virtio-serial-pci,id=serial0",
             "-device", f"virtserialport,bus=serial0.0,chardev=agent,name={AGENT_PORT}"]
    if spec.qmp_fd is not None:
        argv += ["-chardev", f"socket,id=qmp,fd={spec.qmp_fd}", "-mon", "chardev=qmp,mode=control"]
    for i, disk in enumerate(spec.disks):
        mode = "readonly=on,cache=writeback" if disk.readonly \
            else f"readonly=off,cache={_CACHE_WRITABLE}"
        argv += ["-drive", f"if=none,id=disk{i},file={_escape(disk.path)},"
                           f"format={disk.format},{mode}",
                 "-device", f"virtio-blk-pci,drive=disk{i},serial={disk.serial}"]
    for i, share in enumerate(spec.shares):
        readonly = ",readonly=on" if share.readonly else ""
        argv += ["-fsdev", f"local,id=fs{i},path={_escape(share.path)},"
                           f"security_model=passthrough,multidevs=remap{readonly}",
                 "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={share.tag}"]
    if spec.hotplug:
        argv += ["-device", f"virtio-scsi-pci,id={SCSI_BUS}", "-device", "vmgenid,guid=auto"]
    for i, nic in enumerate(spec.nics):
        if nic.tap:
            argv += ["-netdev", f"tap,id=net{i},ifname={nic.tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=net{i},mac={nic.mac}"]
        else:
            argv += ["-device", f"virtio-net-pci,mac={nic.mac}"]
    if spec.incoming:
        argv += ["-incoming", "defer"]
    return argv


def hotplug_disk_commands(index: int, disk: Disk) -> list[tuple[str, dict[str, object]]]:
    """QMP commands that attach ``disk`` to a running VM's SCSI bus as LUN
    ``index`` (the guest finds it by its serial, as a virtio disk)."""
    node = f"hp{index}"
    return [
        ("blockdev-add", {"node-name": node, "driver": disk.format, "read-only": disk.readonly,
                          "file": {"driver": "file", "filename": disk.path,
                                   "read-only": disk.readonly}}),
        ("device_add", {"driver": "scsi-hd", "id": f"hpdisk{index}", "bus": f"{SCSI_BUS}.0",
                        "scsi-id": 0, "lun": index, "drive": node, "serial": disk.serial}),
    ]


def qemu_version(binary: str | None = None) -> str:
    """``7.2.22`` from ``QEMU emulator version 7.2.22 (Debian ...)``."""
    out = subprocess.run([find_binary(binary), "--version"], capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL).stdout
    match = re.search(r"version (\S+)", out)
    if match is None:
        raise Unavailable(f"cannot read the QEMU version from {out.strip()[:80]!r}")
    return match.group(1)


def _machine(machine: str) -> str:
    """microvm has no PCI bus unless asked for one; every device here is PCI."""
    if machine.split(",")[0] == "microvm" and "pcie=" not in machine:
        return f"{machine},pcie=on"
    return machine


def _escape(value: str) -> str:
    """QEMU option values end at a comma; a literal comma is written twice."""
    return value.replace(",", ",,")


def _validate(spec: VmSpec) -> None:
    if spec.accel not in ("kvm", "tcg"):
        raise InvalidArgument(f"accelerator {spec.accel!r}: want kvm or tcg")
    if spec.memory_mb < 64 or spec.cpus < 1:
        raise InvalidArgument(f"a VM needs at least 64 MiB and 1 CPU (got {spec.memory_mb} "
                              f"MiB, {spec.cpus})")
    names = [d.serial for d in spec.disks]
    for serial in names:
        if not re.fullmatch(rf"[A-Za-z0-9_-]{{1,{_SERIAL_MAX}}}", serial):
            raise InvalidArgument(f"disk serial {serial!r}: want 1-{_SERIAL_MAX} letters, "
                                  "digits, - or _")
    if len(set(names)) != len(names):
        raise InvalidArgument("two disks share a serial")
    tags = [s.tag for s in spec.shares]
    for tag in tags:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,31}", tag):
            raise InvalidArgument(f"share tag {tag!r}: want 1-31 letters, digits, . - or _")
    if len(set(tags)) != len(tags):
        raise InvalidArgument("two shares share a tag")
    for nic in spec.nics:
        if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", nic.mac):
            raise InvalidArgument(f"NIC MAC {nic.mac!r} is malformed")
        if nic.tap and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", nic.tap):
            raise InvalidArgument(f"tap name {nic.tap!r} is not a valid interface name")
    if spec.disks and any(d.format not in ("raw", "qcow2") for d in spec.disks):
        raise InvalidArgument("disk format must be raw or qcow2")
