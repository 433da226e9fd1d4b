"""The guest's ``/init`` scripts, run by the static busybox shell.

Busybox's shell runs its applets without an exec, so each step costs a fork
at most; everything is spelled ``/bin/busybox X`` so no applet link is
needed. Messages go to the kernel console (the VM's serial port)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

AGENT_PORT = "isobox.agent"
PROBE_MARKER = "isobox-probe-ok"
MODULES_DIR = "/lib/modules/isobox"  #: one ``<name>.ko`` per module, loaded in order
#: /sys/bus/virtio/devices/*/device of the device types drivers are loaded for
VIRTIO_NET, VIRTIO_BLOCK, VIRTIO_CONSOLE, VIRTIO_SCSI, VIRTIO_9P = (
    "0x0001", "0x0002", "0x0003", "0x0008", "0x0009")
#: A group keyed "cmdline:WORD" loads when WORD is on the kernel command line.
CMDLINE_FLAG = "cmdline:"
#: On the command line when the VM has a writable (ext4) disk: ext4 costs 0.2-0.3 s to load.
WRITABLE_DISK_FLAG = "isobox.upper"
PORT_WAIT_TRIES = 2500  #: 2 ms apart: at least 5 s

_BB = "/bin/busybox"

# The virtio-serial driver adds ports from a work queue after the host
# announces them, so a port may appear a moment after the module loads.
# Links /dev/virtio-ports/NAME as udev would (the guest has no udev).
_PORT_LINKS = f"""\
link_ports() {{
    {_BB} mkdir -p /dev/virtio-ports
    for p in /sys/class/virtio-ports/*; do
        [ -e "$p/name" ] || continue
        read name < "$p/name" || continue
        [ -n "$name" ] && [ ! -e "/dev/virtio-ports/$name" ] && \\
            {_BB} ln -s "../${{p##*/}}" "/dev/virtio-ports/$name"
    done
}}
wait_port() {{
    waited=0
    until [ -e "/dev/virtio-ports/$1" ]; do
        link_ports
        [ -e "/dev/virtio-ports/$1" ] && return 0
        [ "$waited" -ge {PORT_WAIT_TRIES} ] && return 1
        {_BB} usleep 2000
        waited=$((waited + 1))
    done
}}
"""


#: The initramfs root has no parent mount, so pivot_root(2) refuses to leave
#: it; re-rooted on a bind mount of itself (switch_root's move and chroot),
#: the container runtime can pivot_root as it does on a host.
REROOT_DIR = "/.isobox-root"
_REROOT = f"""\
if [ -z "$ISOBOX_REROOTED" ]; then
    export ISOBOX_REROOTED=1
    {_BB} mount --bind / {REROOT_DIR} && cd {REROOT_DIR} && {_BB} mount --move . / && \\
        exec {_BB} chroot . /init
    echo 'isobox-init: cannot re-root on a bind mount; pivot_root will fail'
fi
unset ISOBOX_REROOTED
"""


def _load_modules(groups: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Load each group whose virtio device type is present ("" for always),
    in order. The device types are read once the first group (the virtio
    PCI transport) has loaded: a VM without shares or NICs skips the 9p or
    network drivers."""
    if not any(names for _, names in groups):
        return ""
    lines = ["loaded=' '",
             "load() {",
             "    for m in \"$@\"; do",
             "        case \"$loaded\" in *\" $m \"*) continue;; esac",
             "        loaded=\"$loaded$m \"",
             f"        {_BB} insmod {MODULES_DIR}/$m.ko || echo \"isobox-init: insmod $m failed\"",
             "    done",
             "}",
             "types=' '",
             "device_types() {",
             "    for d in /sys/bus/virtio/devices/*; do",
             "        [ -e \"$d/device\" ] && read t < \"$d/device\" && types=\"$types$t \"",
             "    done",
             "}"]
    scanned = False
    for device_type, names in groups:
        if not names:
            continue
        load = "load " + " ".join(shlex.quote(n) for n in names)
        if not device_type:
            lines.append(load)
            continue
        if device_type.startswith(CMDLINE_FLAG):  # a word the host put on the kernel's command line
            word = shlex.quote(device_type[len(CMDLINE_FLAG):])
            lines.append(f"case \" $({_BB} cat /proc/cmdline) \" in *\" \"{word}\" \"*) {load};; esac")
            continue
        if not scanned:
            lines.append("device_types")
            scanned = True
        lines.append(f"case \"$types\" in *\" {device_type} \"*) {load};; esac")
    return "\n".join(lines) + "\n"


ModuleGroups = Sequence[tuple[str, Sequence[str]]]


def probe_init(modules: ModuleGroups) -> str:
    """Reach userspace, say so on the agent port, power off at once."""
    return (f"#!{_BB} sh\n"
            f"# isobox probe: the shortest path from power-on to the agent port.\n"
            f"{_BB} mount -t sysfs sysfs /sys\n"
            f"{_BB} mount -t devtmpfs devtmpfs /dev\n"
            + _load_modules(modules) + _PORT_LINKS
            + f"if wait_port {AGENT_PORT}; then\n"
              f"    echo {PROBE_MARKER} > /dev/virtio-ports/{AGENT_PORT}\n"
              f"else\n"
              f"    echo 'isobox-probe: no virtio port named {AGENT_PORT}'\n"
              f"fi\n"
              f"{_BB} reboot -f\n")


def agent_init(modules: ModuleGroups, argv: Sequence[str]) -> str:
    """Mount the API filesystems, load the drivers, exec the agent."""
    return (f"#!{_BB} sh\n"
            f"# isobox guest init: API filesystems, drivers, then the agent as pid 1.\n"
            + _REROOT +
            f"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"mnt() {{ {_BB} mount \"$@\" || echo \"isobox-init: mount $* failed\"; }}\n"
            f"mnt -t proc -o nosuid,nodev,noexec proc /proc\n"
            f"mnt -t sysfs -o nosuid,nodev,noexec sysfs /sys\n"
            f"mnt -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev\n"
            f"{_BB} mkdir -p /dev/pts /dev/shm\n"
            f"mnt -t devpts -o nosuid,noexec,mode=0620,ptmxmode=0666 devpts /dev/pts\n"
            f"mnt -t tmpfs -o nosuid,nodev,mode=1777 shm /dev/shm\n"
            f"mnt -t tmpfs -o nosuid,nodev,mode=0755 run /run\n"
            f"mnt -t tmpfs -o nosuid,nodev,mode=1777 tmp /tmp\n"
            f"mnt -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup\n"
            + _load_modules(modules) + _PORT_LINKS
            + f"wait_port {AGENT_PORT} || echo 'isobox-init: no virtio port named {AGENT_PORT}'\n"
              f"exec {shlex.join(argv)}\n")
